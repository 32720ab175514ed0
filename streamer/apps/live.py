"""Wiring of the live monitor: plan -> source, session, observers, engine, dashboard."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from emostream.alerts.delivery import AlertDelivery
from emostream.apps import signals
from emostream.audio.sources import FileSource, MicSource, Source, StdinSource, input_devices
from emostream.config import Config, summary
from emostream.engine.events import Event, HopResult, Observer, SessionSummary
from emostream.engine.plan import SessionPlan, make_plan
from emostream.engine.runner import Engine
from emostream.engine.session import Session
from emostream.errors import AudioInputError, ConfigError, EmoStreamError
from emostream.outputs.jsonl import JsonlSink, JsonlWriteError, start_record

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
    if args.fast:
        raise ConfigError(
            "--fast was given with the microphone (the default source), which runs at its own pace; --fast applies "
            "to --file and --demo: remove it, or add --demo to stream the demo recording as fast as possible"
        )
    return MicSource(audio.device, audio.sample_rate_hz, audio.channels, audio.block_ms, audio.ring_seconds)


class ChangePrinter:
    """Plain output without a dashboard: one line whenever a channel's shown emotion changes."""

    def __init__(self) -> None:
        self._shown: dict[int, str | None] = {}

    def on_event(self, event: Event) -> None:
        """Print a line when a hop shows a new label on its channel."""
        if not isinstance(event, HopResult):
            return
        result = event
        if self._shown.get(result.channel) == result.emotion or result.emotion is None:
            return
        self._shown[result.channel] = result.emotion
        conf = "" if result.confidence is None else f" ({result.confidence:.2f})"
        print(f"{result.t_end:8.1f} s  channel {result.channel}: {result.emotion}{conf}", flush=True)

    def on_end(self, summary: SessionSummary) -> None:
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
    plan = make_plan(cfg)
    source = make_source(args, cfg)
    jsonl_stdout = cfg.output.jsonl == "-"
    try:
        session = Session(plan, input_rate_hz=source.rate_hz, channels=source.channels, source=source.name)
        # alert delivery first: a missing alert command is refused (exit 2) before any output is written
        delivery = [AlertDelivery(cfg.alerts_output)] if cfg.alerts and cfg.alerts_output.enabled else []
        observers = _observers(plan, source, jsonl_stdout, session.session_id) + delivery
        engine = Engine(source, session, observers, max_audio_s=args.duration, snapshots=cfg.output.dashboard)
    except BaseException:
        source.stop()
        raise
    stopped = _drive(engine, cfg.output.dashboard, jsonl_stdout)
    try:
        result = engine.finish()  # observers close here: settled alert deliveries, the end record
    except EmoStreamError:
        # the session ended with an error (bad audio, the --jsonl disk full): still show what it did, if anything;
        # the error itself is printed once, after the summary
        done = engine.final_summary or engine.summary()
        if done.hops:
            shown = dataclasses.replace(done, exit_reason="error (see the message below)")
            _print_summary(shown, jsonl_stdout, cfg.output.dashboard)
        raise
    if stopped == OUTPUT_CLOSED:
        raise BrokenPipeError(errno.EPIPE, OUTPUT_CLOSED)  # nothing more to show: a normal end (cli.main: exit 0)
    _print_summary(result, to_stderr=jsonl_stdout, after_dashboard=cfg.output.dashboard)
    # audio the source lost (a truncated file, a stream cut mid-frame) makes the run exit 3: said as errors;
    # what looks wrong but was analysed (a --format that does not fit, a constant signal, white noise) only warns
    for problem in source.errors:
        print(f"emostream: error: {problem}", file=sys.stderr, flush=True)
    for warning in [w for w in source.warnings if w not in source.errors] + session.warnings:
        print(f"emostream: warning: {warning}", file=sys.stderr, flush=True)
    failed = [o.failed for o in observers if isinstance(o, JsonlSink) and o.failed]
    if failed:
        raise JsonlWriteError(failed[0])  # the end record itself did not fit
    if stopped == "interrupted":
        return EXIT_INTERRUPTED
    return AudioInputError.exit_code if source.errors else 0


def _observers(plan: SessionPlan, source: Source, jsonl_stdout: bool, session_id: str) -> list[Observer]:
    """JSON lines (with its start record) and, without a dashboard, the change printer."""
    cfg = plan.config
    observers: list[Observer] = []
    if cfg.output.jsonl is not None:
        record = start_record(
            model_name=plan.model_name,
            labels=plan.labels,
            source=source.name,
            rate_hz=source.rate_hz,
            channels=source.channels,
            config=summary(cfg),
        )
        observers.append(JsonlSink(cfg.output.jsonl, record, session_id=session_id))
    if not cfg.output.dashboard and not jsonl_stdout:
        observers.append(ChangePrinter())
    return observers


OUTPUT_CLOSED = "standard output closed"


def _drive(engine: Engine, dashboard: bool, to_stderr: bool) -> str | None:
    """Start the engine and wait for its end, updating the dashboard; why it was stopped early, else None.

    ``"interrupted"``: Ctrl-C or SIGTERM (a signal that came during start-up, held by
    :mod:`emostream.apps.signals`, stops the engine as soon as it runs: the ``start`` and
    ``end`` records are written, the summary shown). :data:`OUTPUT_CLOSED`: the reader of
    standard output went away (``| head``), seen even while nothing is written to it.
    """
    engine.start()
    try:
        if signals.release():
            raise KeyboardInterrupt
        with _dashboard(dashboard, to_stderr) as live:
            while not engine.wait(0.05):
                if live is not None:
                    live.update(engine.state)
                if stdout_closed():
                    engine.stop(OUTPUT_CLOSED)
                    engine.wait(5.0)
                    return OUTPUT_CLOSED
            if live is not None:
                live.update(engine.state)
    except KeyboardInterrupt:
        engine.stop("interrupted")
        engine.wait(5.0)
        return "interrupted"
    except BrokenPipeError:  # the dashboard's last frame could not be written
        engine.stop(OUTPUT_CLOSED)
        engine.wait(5.0)
        return OUTPUT_CLOSED
    return None


def stdout_closed() -> bool:
    """True when standard output is a pipe (or terminal) whose reader has gone (poll reports an error or hang-up)."""
    if not hasattr(select, "poll"):
        return False
    stream = sys.__stdout__  # the real one: the dashboard puts a proxy in sys.stdout while it runs
    try:
        fd = stream.fileno() if stream is not None else -1
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):  # not a real file (an embedding program)
        return False
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: poll reports only POLLERR, POLLHUP and POLLNVAL
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
