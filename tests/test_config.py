"""Config loading: the shipped config.toml equals the defaults; errors name the key; overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from emostream.apps.cli import build_parser
from emostream.apps.options import config_from_args
from emostream.config import MODEL_OVERRIDES, SECTIONS, Config, apply_overrides, config_from_dict, load_config
from emostream.errors import ConfigError
from emostream.frontend.features import FeatureConfig
from emostream.frontend.timing import WindowTiming
from emostream.frontend.vad import VadConfig

SHIPPED = Path(__file__).parent.parent / "config.toml"


def test_shipped_config_equals_builtin_defaults() -> None:
    loaded = load_config(SHIPPED)
    assert loaded == Config(source=str(SHIPPED))


def test_shipped_config_writes_out_every_setting_that_has_a_value() -> None:
    # settings whose default is None ("not set") can only appear as commented examples
    data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    text = SHIPPED.read_text(encoding="utf-8")
    for name, cls in {**SECTIONS, **MODEL_OVERRIDES}.items():
        for f in dataclasses.fields(cls):
            default = None if name in MODEL_OVERRIDES else getattr(cls(), f.name)
            if default is None:
                assert f"# {f.name} = " in text, f"[{name}] {f.name} has no commented example"
            else:
                assert f.name in data[name], f"[{name}] {f.name} is missing from config.toml"


def test_without_path_the_environment_variable_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[smoothing]\nmethod = "window"\nwindow_s = 3\n')
    monkeypatch.setenv("EMOSTREAM_CONFIG", str(path))
    cfg = load_config()
    assert cfg.smoothing.method == "window"
    assert cfg.smoothing.window_s == 3.0 and isinstance(cfg.smoothing.window_s, float)
    monkeypatch.delenv("EMOSTREAM_CONFIG")
    assert load_config() == Config()


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"smoothing": {"alpah": 0.3}}, ["[smoothing] alpah is not a known key", "hysteresis", "time_constant_s"]),
        ({"smoothng": {}}, ["[smoothng] is not a known section", "smoothing"]),
        ({"smoothing": {"method": "median"}}, ["[smoothing] method", "ema, window"]),
        ({"smoothing": {"hysteresis": "big"}}, ["[smoothing] hysteresis is 'big'", "a number"]),
        ({"audio": {"channels": 0}}, ["[audio] channels is 0"]),
        ({"audio": {"channels": 1.5}}, ["[audio] channels is 1.5", "an integer"]),
        ({"output": {"dashboard": "yes"}}, ["[output] dashboard", "true or false"]),
        ({"vad": {"aggressiveness": 7}}, ["[vad] aggressiveness is 7"]),
        ({"vad": {"frame_ms": 25}}, ["[vad] frame_ms is 25"]),
        ({"model": {"num_threads": 0}}, ["[model] num_threads is 0"]),
    ],
)
def test_bad_settings_name_the_file_section_and_key(data: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "my.toml")
    message = str(info.value)
    assert message.startswith("my.toml: ")
    for fragment in fragments:
        assert fragment in message


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[smoothing\nmethod = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_window_hop_must_align_with_the_frame_hop_and_vad_frame() -> None:
    cfg = config_from_dict({"windowing": {"window_hop_ms": 200}}, "x.toml")
    timing = WindowTiming.resolve(FeatureConfig(), VadConfig(), cfg.windowing)
    assert timing.features.window_hop_ms == 200.0 and timing.hop_s == 0.2
    assert timing.lead_in_samples == 16000  # first_window_ms 1000 of a 2000 ms window
    for hop, unit in ((255, "feature frame hop"), (250, "VAD frame")):
        windowing = config_from_dict({"windowing": {"window_hop_ms": hop}}, "x.toml").windowing
        with pytest.raises(ConfigError, match=f"window_hop_ms is {hop} ms, not a multiple of the {unit}"):
            WindowTiming.resolve(FeatureConfig(), VadConfig(frame_ms=20), windowing)


def test_vad_overrides_apply_on_top_of_the_model_values() -> None:
    cfg = config_from_dict({"vad": {"aggressiveness": 3}}, "x.toml")
    assert cfg.vad.apply(VadConfig(hangover_ms=300)) == VadConfig(aggressiveness=3, hangover_ms=300)
    gated = config_from_dict({"vad": {"min_level_dbfs": -50}}, "x.toml")
    assert gated.vad.apply(VadConfig()).min_level_dbfs == -50
    with pytest.raises(ConfigError, match=r"\[vad\] min_level_dbfs is 5"):
        config_from_dict({"vad": {"min_level_dbfs": 5}}, "x.toml")


def test_overrides_replace_values_and_are_validated() -> None:
    cfg = apply_overrides(Config(), {"smoothing": {"method": "window", "hysteresis": None}})
    assert cfg.smoothing.method == "window" and cfg.smoothing.hysteresis == Config().smoothing.hysteresis
    with pytest.raises(ConfigError, match=r"command line: \[smoothing\] hysteresis is 1.5"):
        apply_overrides(Config(), {"smoothing": {"hysteresis": 1.5}})


def test_command_line_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[smoothing]\nmethod = "window"\nhysteresis = 0.2\n[audio]\nchannels = 2\n[output]\njsonl = "a.jsonl"\n'
    )
    args = build_parser().parse_args(
        ["--config", str(path), "--hysteresis", "0.05", "--device", "3", "--jsonl", "-", "--no-dashboard"]
    )
    cfg = config_from_args(args)
    assert cfg.smoothing.method == "window"  # from the file
    assert cfg.smoothing.hysteresis == 0.05  # flag wins
    assert cfg.audio.channels == 2
    assert cfg.audio.device == 3
    assert cfg.output.jsonl == "-" and cfg.output.dashboard is False
