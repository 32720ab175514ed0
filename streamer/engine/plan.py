"""The plan step: config file + command-line flags + the model's metadata -> one session plan.

Every way of running emostream (the live monitor, ``analyze``, ``calls``, the Python API)
resolves its settings here and nowhere else: the model is loaded once, the ``[vad]``
overrides are applied on top of the model's trained speech gate, the ``[windowing]`` hop
and first-window lead-in on top of its feature config (checked once, in
:class:`~emostream.frontend.timing.WindowTiming`), ``[labels]`` against the model's labels
(:mod:`emostream.engine.labels`), and the alert rules against the shown labels. The plan then
builds the per-channel pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emostream.alerts.rules import AlertRules
from emostream.config import Config
from emostream.engine.calibration import CalibrationProfile, Calibrator, front_end_fingerprint
from emostream.engine.channels import ChannelPlan, channel_plan
from emostream.engine.labels import LabelGrouping
from emostream.engine.pipeline import ChannelPipeline
from emostream.engine.reading import ReadingConfig
from emostream.errors import ConfigError
from emostream.frontend.timing import WindowTiming
from emostream.inference.model import EmotionModel


@dataclass(frozen=True)
class SessionPlan:
    """Everything a session needs, resolved.

    ``timing``: the streaming schedule (with the ``first_window_ms`` lead-in); ``file_timing``:
    the same windows without the lead-in, as training cut them, for whole-file analysis.
    """

    config: Config
    model: EmotionModel
    timing: WindowTiming
    file_timing: WindowTiming
    reading: ReadingConfig
    prior_windows: float | None  # calibration's n0; None = no calibration for this model or run
    grouping: LabelGrouping  # [labels]: the model's probabilities read over the shown labels
    profile: CalibrationProfile | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """The shown emotion labels, in score order (the model's own with [labels] show = "all")."""
        return self.grouping.labels

    @property
    def model_name(self) -> str:
        """The model's name from its metadata."""
        return self.model.metadata.name

    @property
    def sample_rate_hz(self) -> int:
        """The rate the pipelines run at (the model's)."""
        return self.timing.sample_rate_hz

    def channel_plans(
        self, n_channels: int, default_roles: Sequence[str] = (), *, strict: bool = True
    ) -> tuple[ChannelPlan, ...]:
        """Role, name and analysis of each of ``n_channels`` input channels (see :func:`channel_plan`)."""
        cfg = self.config
        return channel_plan(cfg.channels, cfg.privacy, n_channels, default_roles, strict=strict, where=cfg.source)

    @property
    def calibrated(self) -> bool:
        """Whether pipelines normalise with speaker statistics."""
        return self.prior_windows is not None

    def calibrator(self) -> Calibrator | None:
        """Fresh calibration state for one channel (None when calibration is off or the model has none)."""
        if self.prior_windows is None:
            return None
        meta = self.model.metadata
        horizon = max(1, round(self.config.calibration.horizon_s / self.timing.hop_s))
        return Calibrator(
            meta.norm_mean,
            meta.norm_std,
            prior_windows=self.prior_windows,
            horizon_windows=horizon,
            profile=self.profile,
        )

    def pipeline(self, channel: ChannelPlan) -> ChannelPipeline:
        """A fresh pipeline for one channel."""
        return ChannelPipeline(
            self.model,
            self.timing.vad,
            self.config.smoothing,
            channel=channel.index,
            role=channel.role,
            analysed=channel.analysed,
            feature_cfg=self.timing.features,
            first_window_ms=self.config.windowing.first_window_ms,
            reading=self.reading,
            calibrator=self.calibrator() if channel.analysed else None,
            grouping=self.grouping,
        )

    def alert_rules(self) -> AlertRules:
        """Fresh alert-rule state for one session."""
        return AlertRules(self.config.alerts, self.labels)


def make_plan(cfg: Config, model: EmotionModel | None = None) -> SessionPlan:
    """Resolve ``cfg`` against ``model`` (default: load ``[model] name``); ConfigError/ModelError if they clash."""
    if model is None:
        model = EmotionModel.load(cfg.model.name, cfg.model.num_threads)
    meta = model.metadata
    vad = cfg.vad.apply(meta.vad_config)
    timing = WindowTiming.resolve(meta.feature_config, vad, cfg.windowing)
    file_timing = WindowTiming.of(timing.features, vad)
    grouping = LabelGrouping.resolve(cfg.labels, model.labels, f"model {meta.name!r}")
    # unknown emotions or repeated names fail here, before any audio
    AlertRules(cfg.alerts, grouping.labels, hidden=() if grouping.identity else model.labels)
    prior = _prior_windows(cfg, model)
    profile = None
    if cfg.calibration.profile is not None:
        if prior is None:
            raise ConfigError(
                f"--calibration {cfg.calibration.profile}: model {meta.name!r} was not trained for speaker calibration "
                "(or [calibration] enabled = false); use a calibrated model such as the default, or drop the profile"
            )
        profile = CalibrationProfile.load(cfg.calibration.profile)
        profile.check_fits(
            meta.name, front_end_fingerprint(meta.to_dict()), meta.norm_mean.size, cfg.calibration.profile
        )
    return SessionPlan(
        config=cfg,
        model=model,
        timing=timing,
        file_timing=file_timing,
        reading=ReadingConfig.from_metadata(meta.reading),
        prior_windows=prior,
        grouping=grouping,
        profile=profile,
    )


def _prior_windows(cfg: Config, model: EmotionModel) -> float | None:
    """n0 of the calibration: the config's, else the model's trained value; None when off or untrained."""
    trained = model.metadata.calibration
    if not cfg.calibration.enabled or trained is None or model.metadata.feature_config.feature_set != "summary":
        return None
    if cfg.calibration.prior_windows is not None:
        return cfg.calibration.prior_windows
    return float(trained["prior_windows"])
