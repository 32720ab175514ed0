"""The vendored voice encoder: Resemblyzer's own outputs, its mel arithmetic, level, checksums, fusion."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import windows_whole_and_streamed

from emostream.audio.files import load_mono
from emostream.errors import ConfigError, ModelError
from emostream.frontend.features import FeatureConfig, frame_feature_names, model_input, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.frontend.voice import (
    BLOCK_SAMPLES,
    MODEL_FILE,
    VOICE_DIM,
    VoiceConfig,
    VoiceEncoder,
    _Lstm,
    check_voice_files,
    load_weights,
    mel_filterbank,
    run_encoder,
    voice_encoder_dir,
)

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures"
ANGRY = FIXTURES / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac"
REFERENCE = FIXTURES / "voice" / "resemblyzer_reference.npz"


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder(VoiceConfig())


def test_encoder_file_gives_resemblyzers_embedding() -> None:
    ref = np.load(REFERENCE)
    got = run_encoder((voice_encoder_dir() / MODEL_FILE).read_bytes(), ref["mel"])
    np.testing.assert_allclose(got, ref["embedding"], atol=1e-5)


def test_front_end_matches_resemblyzer_on_the_same_audio(encoder: VoiceEncoder) -> None:
    """Our causal frames start 200 samples earlier than Resemblyzer's centred ones: same frame centres."""
    ref = np.load(REFERENCE)
    start = int(ref["start_sample"]) - 200
    audio = load_mono(ANGRY, SR)
    got = encoder.process(audio[start : start + BLOCK_SAMPLES])
    assert float(got @ ref["embedding"]) > 0.99
    mel = encoder.mel(audio[start : start + BLOCK_SAMPLES])
    np.testing.assert_allclose(mel[2:], ref["mel"][2:], rtol=0.05, atol=1e-3 * float(ref["mel"].max()))


def test_filterbank_is_librosas_slaney_mel() -> None:
    fb = mel_filterbank()
    assert fb.shape == (40, 201)
    # Slaney area norm: each triangle's peak is 2 / (its width in Hz); below 1 kHz the bands are linear.
    centres = np.argmax(fb, axis=1)
    assert np.all(np.diff(centres) >= 0) and fb[:, 0].sum() == 0.0
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(fb, librosa.filters.mel(sr=SR, n_fft=400, n_mels=40), atol=1e-8)


def test_quiet_blocks_are_raised_to_the_target_level(encoder: VoiceEncoder) -> None:
    rng = np.random.default_rng(3)
    block = (0.01 * rng.standard_normal(BLOCK_SAMPLES)).astype(np.float32)  # -40 dBFS
    a, b = encoder.process(block), encoder.process(0.25 * block)
    np.testing.assert_allclose(a, b, atol=1e-5)
    loud = encoder.mel(10.0 * block)  # -20 dBFS: left as it is
    np.testing.assert_allclose(loud, 100.0 * encoder.mel(block) / (10 ** (-30 / 20) / 0.01) ** 2, rtol=0.02)


def test_digital_silence_gives_a_finite_embedding(encoder: VoiceEncoder) -> None:
    out = encoder.process(np.zeros(BLOCK_SAMPLES, dtype=np.float32))
    assert out.shape == (VOICE_DIM,) and np.all(np.isfinite(out))


def test_wrong_block_length_is_refused(encoder: VoiceEncoder) -> None:
    with pytest.raises(ValueError, match="25840"):
        encoder.mel(np.zeros(100, dtype=np.float32))


def test_a_different_encoder_file_is_refused(tmp_path: Path) -> None:
    shutil.copy(voice_encoder_dir() / MODEL_FILE, tmp_path / MODEL_FILE)
    with (tmp_path / MODEL_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="sha256") as info:
        check_voice_files(VoiceConfig(), model_dir=tmp_path, context="model x.json")
    assert info.value.exit_code == 5 and "x.json" in str(info.value)
    with pytest.raises(ModelError, match="voice_encoder_export"):
        VoiceEncoder(VoiceConfig(), model_dir=tmp_path)


def test_config_round_trip_and_old_dicts_unchanged() -> None:
    plain = FeatureConfig(pitch=True, deltas=True)
    assert "voice" not in plain.to_dict()  # cache keys and older models' metadata unchanged
    fused = FeatureConfig(pitch=True, deltas=True, voice=VoiceConfig())
    assert FeatureConfig.from_dict(fused.to_dict()) == fused
    assert summary_feature_names(fused)[-VOICE_DIM:] == [f"voice_{i:03d}" for i in range(VOICE_DIM)]
    with pytest.raises(ConfigError, match="target_dbfs"):
        VoiceConfig(target_dbfs=5.0)
    with pytest.raises(ConfigError, match="summary"):
        FeatureConfig(feature_set="frames", voice=VoiceConfig())
    with pytest.raises(ConfigError, match="unknown"):
        FeatureConfig.from_dict({**fused.to_dict(), "voice": {"model_sha256": "0" * 64, "extra": 1}})


def test_model_input_needs_the_voice_embedding() -> None:
    cfg = FeatureConfig(pitch=True, deltas=True, voice=VoiceConfig())
    frames = np.zeros((cfg.frames_per_window, len(frame_feature_names(cfg))), dtype=np.float32)
    with pytest.raises(ValueError, match="voice_embedding"):
        model_input(frames, None, cfg)
    with pytest.raises(ValueError, match="no voice encoder"):
        model_input(frames, None, FeatureConfig(pitch=True, deltas=True), voice_embedding=np.zeros(VOICE_DIM))


def test_windows_carry_the_embedding_of_their_last_block_streamed_or_whole() -> None:
    cfg = FeatureConfig(pitch=True, deltas=True, voice=VoiceConfig())
    audio = np.concatenate([np.zeros(SR // 2, dtype=np.float32), load_mono(ANGRY, SR)])
    whole, streamed, extractor = windows_whole_and_streamed(cfg, audio, 777)
    assert len(whole) == len(streamed) and any(w.is_speech for w in whole)
    for a, b in zip(whole, streamed, strict=True):
        np.testing.assert_array_equal(a.features[-VOICE_DIM:], b.features[-VOICE_DIM:])
    own = VoiceEncoder(VoiceConfig())
    padded = np.concatenate([audio, np.zeros(cfg.window_samples, dtype=np.float32)])
    for w in whole:
        tail = w.features[-VOICE_DIM:]
        if not w.is_speech:
            assert not tail.any()
            continue
        end = w.index * cfg.window_hop_samples + cfg.window_samples
        np.testing.assert_array_equal(tail, own.process(padded[end - BLOCK_SAMPLES : end], end_sample=end))
    assert extractor.voice_embeddings_computed == sum(w.is_speech for w in whole)


def test_channels_share_one_copy_of_the_weights() -> None:
    a, b = VoiceEncoder(VoiceConfig()), VoiceEncoder(VoiceConfig())
    assert a._net is b._net  # 5.7 MB once per process, not once per call


def test_mel_in_kept_buffers_is_the_plain_arithmetic(encoder: VoiceEncoder) -> None:
    """The encoder reuses its FFT buffers between blocks: each block's mel is still the plain formula's."""
    rng = np.random.default_rng(7)
    audio = load_mono(ANGRY, SR)
    blocks = [audio[:BLOCK_SAMPLES], audio[8000 : 8000 + BLOCK_SAMPLES]]
    blocks += [(rng.standard_normal(BLOCK_SAMPLES) * g).astype(np.float32) for g in (1e-4, 0.5)]
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(400) / 400)).astype(np.float32)
    for block in [*blocks, *blocks]:  # twice: nothing left over from the previous block
        frames = np.lib.stride_tricks.sliding_window_view(block, 400)[::160]
        spectrum = np.fft.rfft(frames * window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        expected = power @ np.ascontiguousarray(mel_filterbank().T, dtype=np.float32)
        rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
        if rms < 10 ** (-30 / 20):
            expected *= np.float32((10 ** (-30 / 20) / rms) ** 2)
        np.testing.assert_array_equal(encoder.mel(block), expected)


def test_the_level_of_overlapping_blocks_is_the_plain_formulas_bit_for_bit() -> None:
    """Blocks of one stream reuse the squares of the samples they share (issue 16): each block's RMS, and so
    its level factor, is still np.mean's of its own squares, across gaps, misaligned ends, resets and the
    ring's moves."""
    rng = np.random.default_rng(16)
    audio = (rng.standard_normal(40 * BLOCK_SAMPLES) * rng.uniform(1e-4, 0.5)).astype(np.float32)
    encoder = VoiceEncoder(VoiceConfig())
    ends = [BLOCK_SAMPLES + 8000 * i for i in range(30)] + [BLOCK_SAMPLES * 30, BLOCK_SAMPLES * 30 + 80]
    ends += [BLOCK_SAMPLES * 30 + 80, BLOCK_SAMPLES * 31, None, BLOCK_SAMPLES * 35, BLOCK_SAMPLES * 35 + 8000]
    previous = None
    for end in ends:  # None: a new stream
        if end is not None:
            block = audio[end - BLOCK_SAMPLES : end]
            expected = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
            assert encoder._rms(block, None if previous is None else end - previous) == expected
        previous = end


def test_overlapping_blocks_reuse_their_shared_mel_frames() -> None:
    """Blocks 0.5 s apart share 110 of 160 frames: only the 50 new ones are computed, and the mel is the
    whole block's to float32 rounding; a gap, a misaligned end or a reset computes every frame."""
    audio = np.tile(load_mono(ANGRY, SR), 2)
    plain, reusing = VoiceEncoder(VoiceConfig()), VoiceEncoder(VoiceConfig())
    ends = [BLOCK_SAMPLES, BLOCK_SAMPLES + 8000, BLOCK_SAMPLES + 16000, BLOCK_SAMPLES + 56000, BLOCK_SAMPLES + 56080]
    computed = []
    for end in ends:
        before = reusing.mel_frames_computed
        got = reusing.mel(audio[end - BLOCK_SAMPLES : end], end_sample=end)
        computed.append(reusing.mel_frames_computed - before)
        np.testing.assert_allclose(got, plain.mel(audio[end - BLOCK_SAMPLES : end]), rtol=1e-5, atol=1e-12)
    assert computed == [160, 50, 50, 160, 160]  # 40000 samples on is past the block; 80 is off the frame grid
    reusing.reset()
    before = reusing.mel_frames_computed
    reusing.mel(audio[ends[-1] - BLOCK_SAMPLES : ends[-1]], end_sample=ends[-1])
    assert reusing.mel_frames_computed - before == 160


def _plain_lstm_layer_outputs(weights: dict[str, np.ndarray], mel: np.ndarray) -> list[np.ndarray]:
    """PyTorch's LSTM written out plainly (gates i, f, g, o; float64): every layer's outputs, (160, 256) each."""
    x = mel.astype(np.float64)
    outputs = []
    for k in range(3):
        w_ih, w_hh = weights[f"lstm.weight_ih_l{k}"], weights[f"lstm.weight_hh_l{k}"]
        bias = weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"]
        h, c, out = np.zeros(256), np.zeros(256), []
        for t in range(x.shape[0]):
            i, f, g, o = np.split(w_ih @ x[t] + w_hh @ h + bias, 4)
            c = c / (1 + np.exp(-f)) + np.tanh(g) / (1 + np.exp(-i))
            h = np.tanh(c) / (1 + np.exp(-o))
            out.append(h)
        x = np.array(out)
        outputs.append(x)
    return outputs


def test_layer_means_follow_the_embedding_and_are_the_layers_time_means(encoder: VoiceEncoder) -> None:
    audio = load_mono(ANGRY, SR)
    block = audio[8000 : 8000 + BLOCK_SAMPLES]
    layered = VoiceEncoder(VoiceConfig(layer_means=(2, 3)))
    got = layered.process(block)
    assert got.shape == (3 * VOICE_DIM,) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:VOICE_DIM], encoder.process(block))  # the embedding itself is unchanged
    weights = load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes())
    plain = _plain_lstm_layer_outputs(weights, encoder.mel(block))
    np.testing.assert_allclose(got[VOICE_DIM : 2 * VOICE_DIM], plain[1].mean(axis=0), atol=2e-5)
    np.testing.assert_allclose(got[2 * VOICE_DIM :], plain[2].mean(axis=0), atol=2e-5)
    assert np.abs(plain[1].mean(axis=0) - plain[2].mean(axis=0)).max() > 0.05  # two different layers


def test_layer_means_config_names_and_checks() -> None:
    voice = VoiceConfig(layer_means=(2, 3))
    cfg = FeatureConfig(pitch=True, deltas=True, voice=voice)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["voice"]["layer_means"] == [2, 3]
    assert "layer_means" not in VoiceConfig().to_dict()  # v5 / v6 configs and their cache keys unchanged
    names = summary_feature_names(cfg)
    assert voice.dim == 768 and names[-768:-512] == [f"voice_{i:03d}" for i in range(VOICE_DIM)]
    assert names[-512] == "voice_l2_000" and names[-1] == "voice_l3_255"
    frames = np.zeros((cfg.frames_per_window, len(frame_feature_names(cfg))), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(768,\)"):
        model_input(frames, None, cfg, voice_embedding=np.zeros(VOICE_DIM, dtype=np.float32))
    for bad in ((0,), (4,), (3, 2), (2, 2)):
        with pytest.raises(ConfigError, match="layer_means"):
            VoiceConfig(layer_means=bad)
    with_student = VoiceConfig(layer_means=(2,), student_file="s.tflite", student_sha256="0" * 64)
    assert VoiceConfig.from_dict(with_student.to_dict()) == with_student  # a student distilled with layer means
    with pytest.raises(ConfigError, match="layer_means"):
        VoiceConfig.from_dict({"layer_means": "2"})


def test_the_lstm_is_the_plain_float64_network_for_one_block_and_a_batch(encoder: VoiceEncoder) -> None:
    """``_Lstm``'s step (halved sigmoid weights, one buffer, time-major) against PyTorch's LSTM written out
    plainly: the embedding and every layer's time mean, alone and in a batch of blocks (the same values but for
    rounding)."""
    weights = load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes())
    net = _Lstm(weights)
    audio = load_mono(ANGRY, SR)
    mels = np.stack([encoder.mel(audio[s : s + BLOCK_SAMPLES]) for s in (0, 8000, 24000)])
    batch = net(mels, (1, 2, 3))
    assert batch.shape == (3, 4 * VOICE_DIM) and batch.dtype == np.float32
    for mel, got in zip(mels, batch, strict=True):
        np.testing.assert_allclose(net(mel[None], (1, 2, 3))[0], got, atol=1e-6)  # BLAS: one row or three
        layers = _plain_lstm_layer_outputs(weights, mel)
        emb = np.maximum(weights["linear.weight"].astype(np.float64) @ layers[2][-1] + weights["linear.bias"], 0.0)
        np.testing.assert_allclose(got[:VOICE_DIM], emb / np.linalg.norm(emb), atol=2e-5)
        for k, layer in enumerate(layers, start=1):
            np.testing.assert_allclose(got[k * VOICE_DIM : (k + 1) * VOICE_DIM], layer.mean(axis=0), atol=2e-5)


class _BlockRecorder(VoiceEncoder):
    """A voice encoder that records the blocks it is given and returns zeros (no LSTM run)."""

    def __init__(self, config: VoiceConfig) -> None:
        super().__init__(config)
        self.blocks: list[np.ndarray] = []

    def process(self, block: object, *, end_sample: int | None = None) -> np.ndarray:
        self.blocks.append(np.array(block, dtype=np.float32))
        return np.zeros(self.config.dim, dtype=np.float32)


def _blocks_of(audio: np.ndarray, lookback_ms: float) -> tuple[list[np.ndarray], list]:
    from emostream.frontend.windowing import WindowExtractor

    voice = VoiceConfig(speech_lookback_ms=lookback_ms)
    recorder = _BlockRecorder(voice)
    extractor = WindowExtractor(
        FeatureConfig(pitch=True, deltas=True, voice=voice), VadConfig(), voice_encoder=recorder
    )
    windows = extractor.process(audio) + extractor.flush()
    return recorder.blocks, [w for w in windows if w.is_speech]


def _longest_zero_run(x: np.ndarray) -> int:
    zero = np.concatenate([[0], (x == 0).astype(np.int8), [0]])
    steps = np.diff(zero)
    starts, ends = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    return int((ends - starts).max()) if starts.size else 0


def _find(block: np.ndarray, piece: np.ndarray) -> int | None:
    """Where ``piece`` starts in ``block`` (exactly), or None."""
    views = np.lib.stride_tricks.sliding_window_view(block, piece.size)
    hits = np.flatnonzero((views == piece).all(axis=1))
    return int(hits[0]) if hits.size else None


def test_a_speech_only_block_leaves_the_pause_out() -> None:
    """Two utterances 1.5 s of digital silence apart: the last speech window (2-4 s) gives the encoder its last
    1.615 s of audio with 0 ms, pause included and the first utterance out of reach; with a 4 s lookback its
    last 1.615 s of speech: the first utterance's end, then the second one, only the VAD's hangover between."""
    speech = load_mono(ANGRY, SR)
    voiced = speech[int(0.9 * SR) : int(2.2 * SR)]  # 1.3 s of the actor's voice, no leading silence
    gap = np.zeros(int(1.5 * SR), dtype=np.float32)
    audio = np.concatenate([voiced, gap, voiced[: int(0.8 * SR)]]).astype(np.float32)
    plain, _ = _blocks_of(audio, 0.0)
    speech_only, windows = _blocks_of(audio, 4000.0)
    assert len(plain) == len(speech_only) == len(windows) >= 2 and windows[-1].end_s == pytest.approx(4.0)
    # 50 ms from 0.2 s before the first utterance's end and from 0.2 s into the second (past the VAD's onset)
    first_end, second_start = voiced[int(1.1 * SR) : int(1.1 * SR) + 800], voiced[int(0.2 * SR) : int(0.2 * SR) + 800]
    assert _find(plain[-1], first_end) is None and _find(plain[-1], second_start) is not None
    assert _longest_zero_run(plain[-1]) > 0.4 * SR  # the pause
    j1, j2 = _find(speech_only[-1], first_end), _find(speech_only[-1], second_start)
    assert j1 is not None and j2 is not None
    hangover = VadConfig().hangover_ms * SR // 1000
    assert 0 < j2 - j1 <= int(0.4 * SR) + hangover + 320  # 0.2 s of each utterance, the hangover between
    assert _longest_zero_run(speech_only[-1]) <= hangover + 320
    assert speech_only[-1].dtype == np.float32 and speech_only[-1].shape == (BLOCK_SAMPLES,)


def test_a_speech_only_block_is_zero_padded_in_front_and_stream_equals_batch() -> None:
    speech = load_mono(ANGRY, SR)
    short = np.concatenate([np.zeros(SR, np.float32), speech[int(0.9 * SR) : int(1.9 * SR)], np.zeros(SR, np.float32)])
    blocks, _ = _blocks_of(short.astype(np.float32), 2000.0)
    assert blocks, "the second of speech makes a speech window"
    first = blocks[0]
    heard = np.flatnonzero(first)
    assert heard.size and heard[0] >= BLOCK_SAMPLES - int(1.3 * SR)  # at most the 1 s spoken plus VAD hangover
    voice = VoiceConfig(layer_means=(2, 3), speech_lookback_ms=4000.0)
    cfg = FeatureConfig(pitch=True, deltas=True, voice=voice)
    audio = np.concatenate([speech, np.zeros(SR, np.float32), speech]).astype(np.float32)
    whole, streamed, _ = windows_whole_and_streamed(cfg, audio, 1234)
    assert [w.index for w in whole] == [w.index for w in streamed]
    for a, b in zip(whole, streamed, strict=True):
        np.testing.assert_allclose(a.features, b.features, rtol=0, atol=1e-3)


def test_speech_lookback_config_is_stored_only_when_set_and_checked() -> None:
    assert "speech_lookback_ms" not in VoiceConfig().to_dict()  # v5-v9 configs and their cache keys unchanged
    voice = VoiceConfig(layer_means=(2, 3), speech_lookback_ms=4000.0)
    cfg = FeatureConfig(pitch=True, deltas=True, voice=voice)
    assert cfg.to_dict()["voice"]["speech_lookback_ms"] == 4000.0 and FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert VoiceConfig.from_dict({"speech_lookback_ms": 2500}).speech_lookback_ms == 2500
    for bad in (1000.0, 20000.0, -1.0, True, "4000"):
        with pytest.raises(ConfigError, match="speech_lookback_ms"):
            VoiceConfig(speech_lookback_ms=bad)  # type: ignore[arg-type]
