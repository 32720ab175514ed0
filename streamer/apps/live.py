"""Wiring of the live monitor: config + flags -> source, model, pipelines, sinks, engine, dashboard."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from emostream.alerts.rules import build_monitor
from emostream.audio.sources import FileSource, MicSource, Source, StdinSource, input_devices
from emostream.config import Config, channel_plan, summary
from emostream.engine.events import HopResult, SessionSummary
from emostream.engine.pipeline import ChannelPipeline
from emostream.engine.runner import Engine, Sink
from emostream.errors import AudioInputError, ConfigError
from emostream.inference.model import EmotionModel
from emostream.outputs.jsonl import JsonlSink, start_record

EXIT_INTERRUPTED = 130
NO_DEVICE_NOTICE = "no audio input device found; playing the bundled demo recording instead (see --file, --stdin)"


def demo_path() -> Path:
    """The bundled demo recording (77 s, one actor, all eight emotions)."""
    return Path(str(resources.files("emostream") / "assets" / "demo.flac"))


def make_source(args: argparse.Namespace, cfg: Config) -> Source:
    """The source chosen by the flags: --file, --stdin, --demo, else the microphone (demo if none)."""
    audio = cfg.audio
    if args.file:
        return FileSource(args.file, audio.block_ms, fast=args.fast)
    if args.stdin:
        if audio.sample_rate_hz is None:
            raise ConfigError("--stdin needs the sample rate of the raw PCM: add --rate HZ (e.g. --rate 16000)")
        return StdinSource(sys.stdin.buffer, audio.sample_rate_hz, audio.channels, audio.stdin_format, audio.block_ms)
    if args.demo or (audio.device is None and not input_devices()):
        if not args.demo:
            print(f"emostream: {NO_DEVICE_NOTICE}", file=sys.stderr, flush=True)
        source = FileSource(demo_path(), audio.block_ms, fast=args.fast)
        source.name = "demo (Actor 21, RAVDESS, CC BY-NC-SA 4.0)"
        return source
    return MicSource(audio.device, audio.sample_rate_hz, audio.channels, audio.block_ms, audio.ring_seconds)


def build_pipelines(model: EmotionModel, source: Source, cfg: Config) -> list[ChannelPipeline]:
    """One pipeline per source channel (role and analysis from [[channels]]/[privacy]), with the config's overrides."""
    vad = cfg.vad.resolve(model.metadata.vad_config)
    features = cfg.windowing.resolve(model.metadata.feature_config, vad)
    plans = channel_plan(cfg, source.channels)
    pipelines = [
        ChannelPipeline(
            model,
            vad,
            cfg.smoothing,
            channel=plan.index,
            role=plan.role,
            analysed=plan.analysed,
            feature_cfg=features,
            timeline_seconds=cfg.output.timeline_seconds,
            first_window_ms=cfg.windowing.first_window_ms,
        )
        for plan in plans
    ]
    names = {c.index: c.name for c in cfg.channels if c.name}
    for pipeline in pipelines:
        pipeline.name = names.get(pipeline.channel)
    return pipelines


class ChangePrinter:
    """Plain output without a dashboard: one line whenever a channel's shown emotion changes."""

    def __init__(self) -> None:
        self._shown: dict[int, str | None] = {}

    def hop(self, result: HopResult) -> None:
        if self._shown.get(result.channel) == result.emotion or result.emotion is None:
            return
        self._shown[result.channel] = result.emotion
        conf = "" if result.confidence is None else f" ({result.confidence:.2f})"
        print(f"{result.t_end:8.1f} s  channel {result.channel}: {result.emotion}{conf}", flush=True)

    def end(self, summary: SessionSummary) -> None:
        """Nothing to close."""


@contextmanager
def _dashboard(enabled: bool, to_stderr: bool) -> Iterator[Any]:
    if not enabled:
        with nullcontext(None) as nothing:
            yield nothing
        return
    from rich.console import Console  # noqa: PLC0415

    from emostream.outputs.dashboard import LiveDashboard  # noqa: PLC0415

    console = Console(stderr=True) if to_stderr else Console()
    with LiveDashboard(console=console, redirect_stdout=not to_stderr) as live:
        yield live


def _print_summary(result: SessionSummary, to_stderr: bool, after_dashboard: bool) -> None:
    from rich.console import Console  # noqa: PLC0415

    from emostream.outputs.dashboard import render_summary  # noqa: PLC0415

    console = Console(stderr=to_stderr)
    if after_dashboard:
        console.line()
    console.print(render_summary(result))


def run_monitor(args: argparse.Namespace, cfg: Config) -> int:
    """Run the live monitor; returns the exit code (130 after Ctrl-C)."""
    model = EmotionModel.load(cfg.model.name, cfg.model.num_threads)
    source = make_source(args, cfg)
    jsonl_stdout = cfg.output.jsonl == "-"
    sinks: list[Sink] = []
    jsonl: JsonlSink | None = None
    try:
        pipelines = build_pipelines(model, source, cfg)
        if cfg.output.jsonl is not None:
            record = start_record(
                model_name=model.metadata.name,
                labels=model.labels,
                source=source.name,
                rate_hz=source.rate_hz,
                channels=source.channels,
                config=summary(cfg),
            )
            jsonl = JsonlSink(cfg.output.jsonl, record)
            sinks.append(jsonl)
        alerts = build_monitor(
            [a.to_rule() for a in cfg.alerts],
            cfg.alerts_output.to_output(),
            model.labels,
            pipelines,
            None if jsonl is None else jsonl.write,
        )
        if not cfg.output.dashboard and not jsonl_stdout:
            sinks.append(ChangePrinter())
        engine = Engine(
            source,
            pipelines,
            sinks,
            model_name=model.metadata.name,
            max_audio_s=args.duration,
            timeline_seconds=cfg.output.timeline_seconds,
            on_hops=alerts,
        )
    except BaseException:
        source.stop()
        raise
    interrupted = _drive(engine, cfg.output.dashboard, jsonl_stdout)
    try:
        result = engine.finish()
    finally:
        if alerts is not None:
            alerts.close()
    _print_summary(result, to_stderr=jsonl_stdout, after_dashboard=cfg.output.dashboard)
    for warning in source.warnings:
        print(f"emostream: warning: {warning}", file=sys.stderr, flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return AudioInputError.exit_code if source.warnings else 0


def _drive(engine: Engine, dashboard: bool, to_stderr: bool) -> bool:
    """Start the engine and wait for its end, updating the dashboard; True if Ctrl-C stopped it."""
    engine.start()
    try:
        with _dashboard(dashboard, to_stderr) as live:
            while not engine.wait(0.05):
                if live is not None:
                    live.update(engine.state)
            if live is not None:
                live.update(engine.state)
    except KeyboardInterrupt:
        engine.stop("interrupted")
        engine.wait(5.0)
        return True
    return False
