"""The analysis schedule in whole samples, computed and checked in one place.

Everything after the resampler counts time in samples of the feature rate
(``FeatureConfig.sample_rate_hz``): STFT frames every ``hop_samples``, VAD decisions
every ``vad_frame_samples``, an analysis window of ``window_samples`` every
``window_hop_samples``, optionally after ``lead_in_samples`` of assumed silence so that
the first window closes sooner. :class:`WindowTiming` derives these integers once from
the feature and VAD configs, refuses sizes that do not line up, and turns window
indices into timestamps (seconds since the stream started) by multiplication, never by
accumulating floats.

:class:`WindowingConfig` is the ``[windowing]`` section: the run-time schedule on top of
the model's own (a different hop, an earlier first reading).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from emostream.errors import ConfigError, InvalidSettingError
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig


@dataclass(frozen=True, kw_only=True)
class WindowingConfig:
    """[windowing]: when readings are made at run time.

    ``window_hop_ms``: hop between analysis windows (None = the model's trained hop);
    ``first_window_ms``: audio before the first reading (None = a full window), the
    window then holds that audio after silence, which the VAD masks out.
    """

    window_hop_ms: float | None = None
    first_window_ms: float | None = 1000.0

    def __post_init__(self) -> None:
        if self.window_hop_ms is not None and not 10 <= self.window_hop_ms <= 10000:
            raise InvalidSettingError("window_hop_ms", f"is {self.window_hop_ms}; expected 10 to 10000 ms")
        if self.first_window_ms is not None and not 100 <= self.first_window_ms <= 10000:
            raise InvalidSettingError("first_window_ms", f"is {self.first_window_ms}; expected 100 to 10000 ms")


@dataclass(frozen=True)
class WindowTiming:
    """Sample counts of one analysis schedule (see the module docstring); build with :meth:`of`."""

    features: FeatureConfig
    vad: VadConfig
    vad_frame_samples: int
    lead_in_samples: int

    @classmethod
    def of(cls, features: FeatureConfig, vad: VadConfig, first_window_ms: float | None = None) -> WindowTiming:
        """Check that ``features`` and ``vad`` line up and compute the lead-in; ConfigError if not."""
        rate = features.sample_rate_hz
        vad_frame = vad.frame_samples(rate)
        for name, size in (("window_ms", features.window_samples), ("window_hop_ms", features.window_hop_samples)):
            if size % vad_frame:
                raise ConfigError(
                    f"{name} ({size} samples) is not a multiple of the VAD frame ({vad.frame_ms} ms = "
                    f"{vad_frame} samples); choose a VAD frame_ms that divides it (10 or 20 ms usually do)"
                )
        return cls(features, vad, vad_frame, _lead_in_samples(features, vad_frame, first_window_ms))

    @classmethod
    def resolve(cls, features: FeatureConfig, vad: VadConfig, windowing: WindowingConfig) -> WindowTiming:
        """The model's ``features`` with the ``[windowing]`` hop applied, checked against ``vad``."""
        hop = features.window_hop_ms if windowing.window_hop_ms is None else windowing.window_hop_ms
        frame_hop = features.frame_hop_ms
        step = math.lcm(round(frame_hop), vad.frame_ms) if float(frame_hop).is_integer() else frame_hop
        for unit_name, unit in (("the feature frame hop", frame_hop), ("the VAD frame", vad.frame_ms)):
            if abs(hop / unit - round(hop / unit)) > 1e-9:
                raise ConfigError(
                    f"[windowing] window_hop_ms is {hop:g} ms, not a multiple of {unit_name} ({unit:g} ms); "
                    f"pick a multiple of {step:g} ms such as {4 * step:g} or {10 * step:g}"
                )
        return cls.of(dataclasses.replace(features, window_hop_ms=float(hop)), vad, windowing.first_window_ms)

    @property
    def sample_rate_hz(self) -> int:
        """The rate every count here is in."""
        return self.features.sample_rate_hz

    @property
    def hop_s(self) -> float:
        """Seconds between two readings."""
        return self.features.window_hop_samples / self.sample_rate_hz

    @property
    def vad_frames_per_window(self) -> int:
        """VAD decisions in one analysis window."""
        return self.features.window_samples // self.vad_frame_samples

    def window_start_sample(self, index: int) -> int:
        """First sample of window ``index``, counted from the start of the lead-in."""
        return index * self.features.window_hop_samples

    def window_times_s(self, index: int) -> tuple[float, float]:
        """(start, end) of window ``index`` in seconds of the real stream (a lead-in window starts at 0)."""
        start = self.window_start_sample(index)
        end = start + self.features.window_samples - self.lead_in_samples
        return max(0, start - self.lead_in_samples) / self.sample_rate_hz, end / self.sample_rate_hz


def _lead_in_samples(features: FeatureConfig, vad_frame: int, first_window_ms: float | None) -> int:
    """Silence assumed before the stream so that the first window closes after ``first_window_ms``."""
    if first_window_ms is None or first_window_ms >= features.window_ms:
        return 0
    lead_in = round((features.window_ms - first_window_ms) * features.sample_rate_hz / 1000.0)
    step = math.lcm(features.hop_samples, vad_frame)
    if first_window_ms <= 0 or lead_in % step:
        raise ConfigError(
            f"first_window_ms is {first_window_ms:g}; expected a positive length up to the model's window "
            f"({features.window_ms:g} ms) that differs from it by a multiple of "
            f"{1000 * step / features.sample_rate_hz:g} ms, e.g. 1000"
        )
    return lead_in
