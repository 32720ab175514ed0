"""The plan step: config file + command-line flags + the model's metadata -> one session plan.

Every way of running emostream (the live monitor, ``analyze``, ``calls``, the Python API)
resolves its settings here and nowhere else: the model is loaded once, the ``[vad]``
overrides are applied on top of the model's trained speech gate, the ``[windowing]`` hop
and first-window lead-in on top of its feature config (checked once, in
:class:`~emostream.frontend.timing.WindowTiming`), and the alert rules are checked
against the model's labels. The plan then builds the per-channel pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emostream.alerts.rules import AlertRules
from emostream.config import Config
from emostream.engine.channels import ChannelPlan, channel_plan
from emostream.engine.pipeline import ChannelPipeline
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

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's emotion labels, in score order."""
        return self.model.labels

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
    AlertRules(cfg.alerts, model.labels)  # unknown emotions or repeated names fail here, before any audio
    return SessionPlan(config=cfg, model=model, timing=timing, file_timing=file_timing)
