"""Settings of emostream: config.toml read into the stages' own config dataclasses.

There are no settings classes here. Each ``[section]`` of the file is the config of the
stage it sets, defined once beside that stage (:data:`SECTIONS`), and is built by the
generic loader in :mod:`emostream.schema`, which refuses unknown keys and wrong types
with a :class:`ConfigError` naming the file, section and key. Two sections are
*overrides* of what the model was trained with (:data:`MODEL_OVERRIDES`): ``[vad]``
holds only the VAD settings given, applied on top of the model's own ``VadConfig`` by
the plan step (:mod:`emostream.engine.plan`).

Optional settings (``None`` = "not set": the device default, the model's own value, no
output file) have no TOML spelling, so the shipped config.toml shows them as
commented-out examples. Precedence: built-in defaults < config file (``--config PATH``,
else ``$EMOSTREAM_CONFIG``) < command-line flags (:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream import schema
from emostream.alerts.delivery import AlertOutput
from emostream.alerts.rules import AlertRule
from emostream.audio.config import AudioConfig
from emostream.engine.calibration import CalibrationConfig
from emostream.engine.channels import ChannelConfig, PrivacyConfig
from emostream.engine.labels import LabelsConfig
from emostream.engine.smoothing import SmoothingConfig
from emostream.errors import ConfigError
from emostream.frontend.timing import WindowingConfig
from emostream.frontend.vad import VadConfig
from emostream.inference.choice import ModelConfig
from emostream.outputs.config import OutputConfig
from emostream.server.bus_config import BusConfig, safe_url
from emostream.server.config import ServerConfig

CONFIG_ENV = "EMOSTREAM_CONFIG"


@dataclass(frozen=True)
class Overrides:
    """Settings given for a stage whose values otherwise come from the model's metadata.

    ``of`` is the stage config class; ``values`` the (key, value) pairs given, checked
    against it. :meth:`apply` puts them on top of the model's own config.
    """

    of: type[Any]
    values: tuple[tuple[str, Any], ...] = ()

    def apply(self, base: Any) -> Any:
        """``base`` (an instance of ``of``) with the given values replaced."""
        return dataclasses.replace(base, **dict(self.values)) if self.values else base

    def get(self, key: str) -> Any:
        """The value given for ``key``, or None."""
        return dict(self.values).get(key)

    def to_plain(self) -> dict[str, Any]:
        """Every key of the stage config, None where not given (for the JSONL start record)."""
        given = dict(self.values)
        return {f.name: given.get(f.name) for f in dataclasses.fields(self.of)}


@dataclass(frozen=True, kw_only=True)
class Config:
    """All settings; one attribute per section."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: Overrides = field(default_factory=lambda: Overrides(VadConfig))
    windowing: WindowingConfig = field(default_factory=WindowingConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    channels: tuple[ChannelConfig, ...] = ()
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    alerts: tuple[AlertRule, ...] = ()
    alerts_output: AlertOutput = field(default_factory=AlertOutput)
    server: ServerConfig = field(default_factory=ServerConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    source: str = "built-in defaults"


# TOML table name -> the stage config it builds. [[name]] arrays of tables in ARRAY_SECTIONS.
SECTIONS: dict[str, type[Any]] = {
    "audio": AudioConfig,
    "windowing": WindowingConfig,
    "smoothing": SmoothingConfig,
    "labels": LabelsConfig,
    "calibration": CalibrationConfig,
    "model": ModelConfig,
    "output": OutputConfig,
    "privacy": PrivacyConfig,
    "alerts_output": AlertOutput,
    "server": ServerConfig,
    "bus": BusConfig,
}
MODEL_OVERRIDES: dict[str, type[Any]] = {"vad": VadConfig}
ARRAY_SECTIONS: dict[str, type[Any]] = {"channels": ChannelConfig, "alerts": AlertRule}


def _overrides(cls: type[Any], data: Any, where: str) -> Overrides:
    values = schema.check_values(cls, data, where)
    schema.build(cls, values, where)  # the values alone must be valid on the defaults
    return Overrides(cls, tuple(values.items()))


def config_from_dict(data: dict[str, Any], where: str) -> Config:
    """Build a :class:`Config` from parsed TOML; unknown sections raise ConfigError."""
    known = sorted([*SECTIONS, *MODEL_OVERRIDES, *ARRAY_SECTIONS])
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            kwargs[name] = schema.build(SECTIONS[name], value, f"{where}: [{name}]")
        elif name in MODEL_OVERRIDES:
            kwargs[name] = _overrides(MODEL_OVERRIDES[name], value, f"{where}: [{name}]")
        elif name in ARRAY_SECTIONS:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {name} must be written as [[{name}]] tables")
            kwargs[name] = tuple(
                schema.build(ARRAY_SECTIONS[name], item, f"{where}: [{name}] #{i + 1}") for i, item in enumerate(value)
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
        if isinstance(current, Overrides):
            changes[name] = _overrides(current.of, dict(current.values) | values, f"{where}: [{name}]")
        else:
            changes[name] = schema.replace(current, values, f"{where}: [{name}]")
    return dataclasses.replace(cfg, **changes)


def summary(cfg: Config) -> dict[str, Any]:
    """Plain-JSON view of every setting (for the JSONL start record)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = value.to_plain() if isinstance(value, Overrides) else schema.to_plain(value)
    for key in ("token", "read_token"):  # a secret never goes into records
        if getattr(cfg.server, key) is not None:
            out["server"][key] = "(set, not shown)"
    out["server"]["ingest_tokens"] = {name: "(set, not shown)" for name in cfg.server.ingest_tokens}
    if cfg.bus.url is not None:  # a password in the bus's URL never goes into records either
        out["bus"]["url"] = safe_url(cfg.bus.url)
    return out
