"""Settings of emostream: config.toml read into frozen, validated dataclasses.

Each ``[section]`` of the TOML file is one small frozen dataclass whose fields are the
section's keys; :func:`parse_section` builds it from a dict, rejecting unknown keys and
values of the wrong type with a :class:`ConfigError` naming the file, section and key,
then calls the class's ``validate()`` for value checks. :class:`Config` gathers the
sections listed in :data:`SECTIONS` (table sections) and :data:`ARRAY_SECTIONS`
(``[[name]]`` arrays of tables); adding a section = one dataclass + one field on
:class:`Config` + one entry in the matching map.

Optional settings (``None`` = "not set": the device default, the model's own value,
no output file) have no TOML spelling, so the shipped config.toml shows them as
commented-out examples. Precedence: built-in defaults < config file (``--config PATH``,
else ``$EMOSTREAM_CONFIG``) < command-line flags (:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from emostream.alerts.rules import AlertOutput, AlertRule, output_problem, rule_problem
from emostream.errors import ConfigError
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VAD_FRAME_MS, VadConfig

CONFIG_ENV = "EMOSTREAM_CONFIG"
SMOOTHING_METHODS: tuple[str, ...] = ("ema", "window")

T = TypeVar("T")


class InvalidValueError(ValueError):
    """Raised by a section's ``validate()``: ``key`` is the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, kw_only=True)
class AudioSettings:
    """[audio]: where sound comes from.

    ``device``: input device index or part of its name (None = system default);
    ``sample_rate_hz``: capture rate (None = device default; required for stdin);
    ``channels``: channels to capture; ``block_ms``: audio callback block length;
    ``ring_seconds``: capacity of the buffer between the callback and the processing
    thread; ``stdin_format``: raw PCM sample format read by ``--stdin``.
    """

    SECTION: ClassVar[str] = "audio"
    device: int | str | None = None
    sample_rate_hz: int | None = None
    channels: int = 1
    block_ms: int = 50
    ring_seconds: float = 10.0
    stdin_format: str = "s16le"

    def validate(self) -> None:
        if self.sample_rate_hz is not None and not 1000 <= self.sample_rate_hz <= 384000:
            raise InvalidValueError(
                "sample_rate_hz", f"is {self.sample_rate_hz}; expected a rate from 1000 to 384000 Hz"
            )
        if not 1 <= self.channels <= 32:
            raise InvalidValueError("channels", f"is {self.channels}; expected 1 to 32")
        if not 5 <= self.block_ms <= 1000:
            raise InvalidValueError("block_ms", f"is {self.block_ms}; expected 5 to 1000 ms")
        if not 0.5 <= self.ring_seconds <= 600:
            raise InvalidValueError("ring_seconds", f"is {self.ring_seconds}; expected 0.5 to 600 s")
        if not self.stdin_format:
            raise InvalidValueError("stdin_format", "is empty; expected a raw PCM format such as 's16le'")


@dataclass(frozen=True, kw_only=True)
class VadSettings:
    """[vad]: overrides of the model's speech gate (None = the model's trained value)."""

    SECTION: ClassVar[str] = "vad"
    frame_ms: int | None = None
    aggressiveness: int | None = None
    hangover_ms: int | None = None
    min_speech_ratio: float | None = None
    min_level_dbfs: float | None = None

    def validate(self) -> None:
        if self.frame_ms is not None and self.frame_ms not in VAD_FRAME_MS:
            raise InvalidValueError("frame_ms", f"is {self.frame_ms}; webrtcvad accepts only {VAD_FRAME_MS}")
        if self.aggressiveness is not None and self.aggressiveness not in (0, 1, 2, 3):
            raise InvalidValueError("aggressiveness", f"is {self.aggressiveness}; expected 0, 1, 2 or 3")
        if self.hangover_ms is not None and self.hangover_ms < 0:
            raise InvalidValueError("hangover_ms", f"is {self.hangover_ms}; expected 0 or more")
        if self.min_speech_ratio is not None and not 0.0 <= self.min_speech_ratio <= 1.0:
            raise InvalidValueError("min_speech_ratio", f"is {self.min_speech_ratio}; expected 0.0 to 1.0")
        if self.min_level_dbfs is not None and not -120.0 <= self.min_level_dbfs <= 0.0:
            raise InvalidValueError("min_level_dbfs", f"is {self.min_level_dbfs}; expected -120 to 0 dBFS")

    def resolve(self, model_vad: VadConfig) -> VadConfig:
        """The model's VAD settings with these overrides applied."""
        changes = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(model_vad, **changes)


@dataclass(frozen=True, kw_only=True)
class WindowingSettings:
    """[windowing]: only the hop between analysis windows can change at run time."""

    SECTION: ClassVar[str] = "windowing"
    window_hop_ms: float | None = None
    first_window_ms: float | None = 1000.0

    def validate(self) -> None:
        if self.window_hop_ms is not None and not 10 <= self.window_hop_ms <= 10000:
            raise InvalidValueError("window_hop_ms", f"is {self.window_hop_ms}; expected 10 to 10000 ms")
        if self.first_window_ms is not None and not 100 <= self.first_window_ms <= 10000:
            raise InvalidValueError("first_window_ms", f"is {self.first_window_ms}; expected 100 to 10000 ms")

    def resolve(self, model_features: FeatureConfig, vad: VadConfig) -> FeatureConfig:
        """The model's feature config with the hop override; ConfigError if the hop does not align."""
        hop = model_features.window_hop_ms if self.window_hop_ms is None else self.window_hop_ms
        frame_hop = model_features.frame_hop_ms
        step = math.lcm(round(frame_hop), vad.frame_ms) if float(frame_hop).is_integer() else frame_hop
        for unit_name, unit in (("the feature frame hop", frame_hop), ("the VAD frame", vad.frame_ms)):
            if abs(hop / unit - round(hop / unit)) > 1e-9:
                raise ConfigError(
                    f"[windowing] window_hop_ms is {hop:g} ms, not a multiple of {unit_name} ({unit:g} ms); "
                    f"pick a multiple of {step:g} ms such as {4 * step:g} or {10 * step:g}"
                )
        if vad.frame_ms not in VAD_FRAME_MS or model_features.window_ms % vad.frame_ms:
            raise ConfigError(
                f"[vad] frame_ms is {vad.frame_ms}; it must divide the model's window of "
                f"{model_features.window_ms:g} ms (10 or 20 ms do)"
            )
        return dataclasses.replace(model_features, window_hop_ms=float(hop))


@dataclass(frozen=True, kw_only=True)
class SmoothingSettings:
    """[smoothing]: how per-window scores become the shown reading (see emostream.engine.smoothing)."""

    SECTION: ClassVar[str] = "smoothing"
    method: str = "ema"
    time_constant_s: float = 1.0
    window_s: float = 4.0
    hysteresis: float = 0.2
    min_dwell_s: float = 3.0
    min_confidence: float = 0.0
    silence_reset_s: float = 0.0

    def validate(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise InvalidValueError("method", f"is {self.method!r}; expected one of {', '.join(SMOOTHING_METHODS)}")
        if self.time_constant_s < 0:
            raise InvalidValueError("time_constant_s", f"is {self.time_constant_s}; expected 0 s or more")
        if self.window_s < 0:
            raise InvalidValueError("window_s", f"is {self.window_s}; expected 0 s or more")
        if not 0.0 <= self.hysteresis < 1.0:
            raise InvalidValueError("hysteresis", f"is {self.hysteresis}; expected a probability margin from 0 to <1")
        if self.min_dwell_s < 0:
            raise InvalidValueError("min_dwell_s", f"is {self.min_dwell_s}; expected 0 s or more")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InvalidValueError("min_confidence", f"is {self.min_confidence}; expected 0.0 to 1.0")
        if self.silence_reset_s < 0:
            raise InvalidValueError("silence_reset_s", f"is {self.silence_reset_s}; expected 0 (never) or more seconds")


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """[model]: which model to run and how many CPU threads it may use."""

    SECTION: ClassVar[str] = "model"
    name: str = "resnet_mlp"
    num_threads: int = 1

    def validate(self) -> None:
        if not self.name:
            raise InvalidValueError("name", "is empty; expected a shipped model name or a path to a .json/.tflite")
        if not 1 <= self.num_threads <= 64:
            raise InvalidValueError("num_threads", f"is {self.num_threads}; expected 1 to 64")


@dataclass(frozen=True, kw_only=True)
class OutputSettings:
    """[output]: JSONL event file (None = none, "-" = stdout), dashboard and its timeline span."""

    SECTION: ClassVar[str] = "output"
    jsonl: str | None = None
    dashboard: bool = True
    timeline_seconds: float = 60.0

    def validate(self) -> None:
        if self.jsonl is not None and not self.jsonl:
            raise InvalidValueError("jsonl", "is empty; give a file path or '-' for stdout, or leave it out")
        if not 5 <= self.timeline_seconds <= 3600:
            raise InvalidValueError("timeline_seconds", f"is {self.timeline_seconds}; expected 5 to 3600 s")


# ---------------------------------------------------------------- call-center settings
# (channels, privacy, alerts; semantics in emostream.alerts.rules and docs/call_center.md)

AGENT_ROLE = "agent"


@dataclass(frozen=True, kw_only=True)
class ChannelSettings:
    """[[channels]]: what one input channel carries.

    ``index``: 0-based channel of the input; ``role``: ``customer``, ``agent`` or any
    name (alert rules select channels by role); ``name``: label shown on the dashboard.
    A channel with role ``agent`` is not analysed unless [privacy] allow_agent_analysis.
    """

    SECTION: ClassVar[str] = "channels"
    index: int | None = None
    role: str = "customer"
    name: str | None = None

    def validate(self) -> None:
        if self.index is None:
            raise InvalidValueError("index", "is missing; give the 0-based channel index, e.g. index = 0")
        if not 0 <= self.index < 32:
            raise InvalidValueError("index", f"is {self.index}; expected 0 to 31")
        if not self.role:
            raise InvalidValueError("role", "is empty; expected 'customer', 'agent' or a name")


@dataclass(frozen=True, kw_only=True)
class PrivacySettings:
    """[privacy]: emotion analysis of employees is prohibited in the EU (AI Act Art. 5(1)(f)),
    so channels with role ``agent`` are only metered unless ``allow_agent_analysis`` is true."""

    SECTION: ClassVar[str] = "privacy"
    allow_agent_analysis: bool = False

    def validate(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True)
class AlertRuleSettings:
    """[[alerts]]: one alert rule (keys and semantics of :class:`emostream.alerts.rules.AlertRule`)."""

    SECTION: ClassVar[str] = "alerts"
    name: str = ""
    emotions: list[str] | str = field(default_factory=list)
    threshold: float = 0.6
    min_duration_s: float = 5.0
    combine: str = "sum"
    clear_threshold: float | None = None
    clear_after_s: float = 0.0
    max_gap_s: float = 2.0
    roles: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)

    def validate(self) -> None:
        problem = rule_problem(self)
        if problem is not None:
            raise InvalidValueError(*problem)

    def to_rule(self) -> AlertRule:
        """The runtime rule."""
        return AlertRule.from_dict(dataclasses.asdict(self))


@dataclass(frozen=True, kw_only=True)
class AlertOutputSettings:
    """[alerts_output]: deliver fired alerts to a command and/or a webhook (see emostream.alerts.rules)."""

    SECTION: ClassVar[str] = "alerts_output"
    command: str | list[str] | None = None
    webhook: str | None = None
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    queue_size: int = 100
    notify_clear: bool = False

    def validate(self) -> None:
        problem = output_problem(self)
        if problem is not None:
            raise InvalidValueError(*problem)

    def to_output(self) -> AlertOutput:
        """The runtime delivery settings."""
        values = dataclasses.asdict(self)
        if isinstance(values["command"], list):
            values["command"] = tuple(values["command"])
        return AlertOutput(**values)


@dataclass(frozen=True)
class ChannelPlan:
    """How one input channel is handled: its role, display name and whether it is analysed."""

    index: int
    role: str
    name: str
    analysed: bool


def channel_plan(
    cfg: Config, n_channels: int, default_roles: tuple[str, ...] = (), *, strict: bool = True
) -> tuple[ChannelPlan, ...]:
    """One plan per input channel, from [[channels]] (else ``default_roles[i]``, else ``speaker``).

    ``agent`` channels are not analysed unless [privacy] allow_agent_analysis is true.
    Raises ConfigError for a [[channels]] index given twice, or (``strict``, for live input)
    one the input does not have; batch mode passes ``strict=False`` to ignore those.
    """
    by_index: dict[int, ChannelSettings] = {}
    for setting in cfg.channels:
        index = int(setting.index or 0)
        if index in by_index:
            raise ConfigError(f"{cfg.source}: [[channels]] index {index} is given twice; give each channel once")
        if index >= n_channels and not strict:
            continue
        if index >= n_channels:
            raise ConfigError(
                f"{cfg.source}: [[channels]] index {index} does not exist; the input has {n_channels} channel(s) "
                f"(indices 0 to {n_channels - 1})"
            )
        by_index[index] = setting
    plans = []
    for i in range(n_channels):
        ch = by_index.get(i)
        role = ch.role if ch is not None else (default_roles[i] if i < len(default_roles) else "speaker")
        name = ch.name if ch is not None and ch.name else f"{role} (ch {i})"
        analysed = role != AGENT_ROLE or cfg.privacy.allow_agent_analysis
        plans.append(ChannelPlan(index=i, role=role, name=name, analysed=analysed))
    return tuple(plans)


@dataclass(frozen=True, kw_only=True)
class Config:
    """All settings; one attribute per section."""

    audio: AudioSettings = field(default_factory=AudioSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    windowing: WindowingSettings = field(default_factory=WindowingSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    channels: tuple[ChannelSettings, ...] = ()
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    alerts: tuple[AlertRuleSettings, ...] = ()
    alerts_output: AlertOutputSettings = field(default_factory=AlertOutputSettings)
    source: str = "built-in defaults"


# TOML table name -> (Config attribute, section class). Arrays of tables go in ARRAY_SECTIONS.
SECTIONS: dict[str, type[Any]] = {
    "audio": AudioSettings,
    "vad": VadSettings,
    "windowing": WindowingSettings,
    "smoothing": SmoothingSettings,
    "model": ModelSettings,
    "output": OutputSettings,
    "privacy": PrivacySettings,
    "alerts_output": AlertOutputSettings,
}
ARRAY_SECTIONS: dict[str, type[Any]] = {"channels": ChannelSettings, "alerts": AlertRuleSettings}


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in get_args(annotation))
    if origin is not None:  # list[...], dict[...]: check the container only
        return isinstance(value, origin)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _coerce(value: Any, annotation: Any) -> Any:
    """Integers given for float settings become floats (TOML ``2`` for ``2.0``)."""
    wants_float = annotation is float or (
        get_origin(annotation) in (Union, types.UnionType) and float in get_args(annotation)
    )
    if wants_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_section(cls: type[T], data: Any, where: str, section: str | None = None) -> T:
    """Build section dataclass ``cls`` from a TOML table; ConfigError names ``where``, section and key."""
    name = section or getattr(cls, "SECTION", cls.__name__)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [{name}] must be a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: [{name}] {key} is not a known key; known keys: {', '.join(sorted(fields))}")
        if not _type_ok(value, fields[key]):
            raise ConfigError(
                f"{where}: [{name}] {key} is {value!r} ({type(value).__name__}); expected {_type_name(fields[key])}"
            )
    obj = cls(**{k: _coerce(v, fields[k]) for k, v in data.items()})
    try:
        obj.validate()  # type: ignore[attr-defined]
    except InvalidValueError as exc:
        raise ConfigError(f"{where}: [{name}] {exc.key} {exc}") from exc
    return obj


def config_from_dict(data: dict[str, Any], where: str) -> Config:
    """Build a :class:`Config` from parsed TOML; unknown sections raise ConfigError."""
    known = sorted([*SECTIONS, *ARRAY_SECTIONS])
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            kwargs[name] = parse_section(SECTIONS[name], value, where, name)
        elif name in ARRAY_SECTIONS:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {name} must be written as [[{name}]] tables")
            kwargs[name] = tuple(
                parse_section(ARRAY_SECTIONS[name], item, where, f"[{name}] #{i + 1}") for i, item in enumerate(value)
            )
        else:
            raise ConfigError(f"{where}: [{name}] is not a known section; known sections: {', '.join(known)}")
    return Config(**kwargs, source=where)


def load_config(path: str | Path | None = None) -> Config:
    """Read ``path``, else ``$EMOSTREAM_CONFIG`` if set, else return the built-in defaults."""
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            return Config()
        path = env
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: config file not found; check --config or ${CONFIG_ENV}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc}); see the shipped config.toml for the syntax") from exc
    return config_from_dict(data, str(file))


def apply_overrides(cfg: Config, overrides: dict[str, dict[str, Any]], where: str = "command line") -> Config:
    """Return ``cfg`` with ``{section: {key: value}}`` replaced (None values are ignored), re-validated."""
    changes: dict[str, Any] = {}
    for name, given in overrides.items():
        values = {k: v for k, v in given.items() if v is not None}
        if not values:
            continue
        current = getattr(cfg, name)
        merged = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        merged.update(values)
        changes[name] = parse_section(type(current), merged, where, name)
    return dataclasses.replace(cfg, **changes)


def summary(cfg: Config) -> dict[str, Any]:
    """Plain-JSON view of every setting (for the JSONL start record)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            out[f.name] = [dataclasses.asdict(v) for v in value]
        else:
            out[f.name] = value
    return out
