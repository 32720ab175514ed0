"""The ``emostream`` command line.

``emostream [options]`` runs the live monitor (microphone by default; ``--file``,
``--stdin`` or ``--demo`` instead); ``emostream devices`` lists input devices;
``emostream analyze PATH...`` classifies whole files. Further subcommands come from the
entry-point group ``emostream.commands``: each entry point is ``register(subparsers)``
and adds parsers that ``set_defaults(func=f)`` with ``f(args) -> int | None``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from emostream import __version__
from emostream.apps.options import add_calibration_options, add_model_options, config_from_args
from emostream.audio.codecs import RAW_FORMATS
from emostream.errors import AudioInputError, EmoStreamError

PLUGIN_GROUP = "emostream.commands"
BUILTIN_COMMANDS = ("devices", "analyze", "calibrate")
TRAIN_MODULES = ("tensorflow", "keras", "sklearn", "matplotlib")
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------- parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("source (default: the default microphone)")
    src.add_argument("--device", help="input device index or part of its name (see `emostream devices`)")
    src.add_argument("--file", metavar="PATH", help="stream a WAV/FLAC/OGG file (at real-time pace)")
    src.add_argument("--fast", action="store_true", help="with --file: process as fast as possible")
    src.add_argument("--stdin", action="store_true", help="read raw PCM from standard input")
    src.add_argument("--rate", type=int, help="capture rate / rate of --stdin PCM in Hz")
    src.add_argument("--channels", type=int, help="channels to capture / channels of --stdin PCM")
    formats = ", ".join(RAW_FORMATS)
    src.add_argument("--format", dest="pcm_format", help=f"--stdin format: {formats} (default s16le)")
    src.add_argument("--demo", action="store_true", help="stream the bundled demo recording")
    src.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much audio")
    out = parser.add_argument_group("output")
    out.add_argument("--jsonl", metavar="PATH", help="write JSON-lines events to PATH ('-' = stdout)")
    out.add_argument("--no-dashboard", action="store_true", help="no live dashboard (plain output)")
    out.add_argument("--timeline-seconds", type=float, help="seconds of history on the dashboard timeline")
    ana = parser.add_argument_group("analysis")
    add_model_options(ana)
    ana.add_argument("--hop-ms", type=float, help="hop between analysis windows in ms (default: the model's)")
    ana.add_argument("--smoothing", choices=("ema", "window"), help="smoothing method")
    ana.add_argument("--time-constant", type=float, metavar="S", help="ema time constant in seconds")
    ana.add_argument("--hysteresis", type=float, help="margin another emotion needs to take over (0..1)")
    ana.add_argument("--min-dwell", type=float, metavar="S", help="seconds a label stays before it may change")
    add_calibration_options(ana)
    ana.add_argument("--vad-aggressiveness", type=int, choices=(0, 1, 2, 3), help="VAD strictness")


def build_parser(plugins: bool = False) -> argparse.ArgumentParser:
    """The full parser; ``plugins`` also loads the ``emostream.commands`` entry points."""
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time speech-emotion monitor. Without a command: run the live monitor.",
    )
    parser.add_argument("--version", action="version", version=f"emostream {__version__}")
    _add_run_options(parser)
    parser.set_defaults(func=cmd_run, live=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=cmd_devices, live=False)
    analyze = sub.add_parser("analyze", help="classify whole audio files (one emotion per file)")
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="WAV/FLAC/OGG files")
    analyze.add_argument("--jsonl", dest="analyze_jsonl", action="store_true", help="JSON lines instead of a table")
    analyze.add_argument(
        "--calibrate",
        action="store_true",
        help="the files are one speaker (or one recording setup): pool their speech statistics, then score each",
    )
    add_calibration_options(analyze)
    add_model_options(analyze)
    analyze.set_defaults(func=cmd_analyze, live=False)
    calibrate = sub.add_parser(
        "calibrate",
        help="save a speaker profile from recordings of one speaker (use it with --calibration PROFILE)",
        description="Pool the speech statistics of the given recordings (one speaker, or one recording setup) "
        "into a profile that live runs, analyze and calls can start from with --calibration PROFILE.",
    )
    calibrate.add_argument("paths", nargs="+", metavar="FILE", help="WAV/FLAC/OGG recordings of the speaker")
    calibrate.add_argument("--out", required=True, metavar="PROFILE", help="where to write the profile (.json)")
    add_model_options(calibrate)
    calibrate.set_defaults(func=cmd_calibrate, live=False, calibration=None, no_calibration=False)
    if plugins:
        _load_plugins(sub)
    return parser


def _load_plugins(sub: Any) -> None:
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            register = ep.load()
        except ImportError as exc:
            _add_unavailable(sub, ep.name, exc)
            continue
        register(sub)


def _add_unavailable(sub: Any, name: str, exc: ImportError) -> None:
    missing = (exc.name or "").split(".")[0]
    if missing in TRAIN_MODULES:
        message = (
            f"`emostream {name}` needs the training extras ({missing} is not installed); "
            "install them with `pip install 'emostream[train]'`"
        )
    else:
        message = f"`emostream {name}` cannot be loaded ({exc}); reinstall emostream"
    # no option prefix: every argument after the command is taken as-is, whatever it looks like
    stub = sub.add_parser(name, help=f"(unavailable: {message})", add_help=False, prefix_chars="\0")
    stub.add_argument("rest", nargs="*")

    def fail(args: argparse.Namespace) -> int:
        raise EmoStreamError(message)

    stub.set_defaults(func=fail)


def _wants_plugins(argv: Sequence[str]) -> bool:
    """Load plugins only for help or an unknown command (plugins may import heavy libraries)."""
    if not argv:
        return False
    first = argv[0]
    return first in ("-h", "--help") or (not first.startswith("-") and first not in BUILTIN_COMMANDS)


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emostream`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(plugins=_wants_plugins(args_list))
    args = parser.parse_args(args_list)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return func(args) or 0
    except EmoStreamError as exc:
        _error(str(exc))
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_MODULES:
            raise
        command = args.command or "run"
        _error(
            f"`emostream {command}` needs the training extras ({exc.name} is not installed); "
            "install them with `pip install 'emostream[train]'`"
        )
        return EmoStreamError.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _error(message: str) -> None:
    sys.stdout.flush()
    print(f"emostream: error: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"emostream: warning: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- devices


def cmd_devices(args: argparse.Namespace) -> int:
    """``emostream devices``: index, name, channels and default rate of each input device."""
    from emostream.audio.sources import default_input_device, input_devices  # noqa: PLC0415

    devices = input_devices()
    if not devices:
        print("no audio input devices found (PortAudio sees none); use --file, --stdin or --demo instead")
        return 0
    default = default_input_device()
    print(f"{'':2}{'index':>5}  {'channels':>8}  {'rate Hz':>8}  name")
    for d in devices:
        mark = "*" if d["index"] == default else " "
        print(f"{mark:2}{d['index']:>5}  {d['channels']:>8}  {d['default_rate_hz']:>8}  {d['name']} ({d['hostapi']})")
    print("* = default input device")
    return 0


# ---------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    """``emostream analyze PATH...``: one emotion per file; exit 3 if any file failed."""
    from emostream.apps.analyze import analyze_files  # noqa: PLC0415
    from emostream.apps.calibrate import check_readable, pooled_normalisation, profile_normalisation  # noqa: PLC0415
    from emostream.engine.plan import make_plan  # noqa: PLC0415

    plan = make_plan(config_from_args(args))
    if args.calibrate:
        check_readable(args.paths)
    normalisation = pooled_normalisation(args.paths, plan) if args.calibrate else profile_normalisation(plan)
    results = analyze_files(args.paths, plan, normalisation)
    for r in results:
        if r.error is not None:
            _error(r.error)
    if args.analyze_jsonl:
        for r in results:
            print(json.dumps(r.to_dict(), separators=(",", ":")), flush=True)
    else:
        _print_analysis_table(results)
    return AudioInputError.exit_code if any(r.error for r in results) else 0


def _print_analysis_table(results: Sequence[Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    names = [Path(r.path).name for r in results]
    shown = names if len(set(names)) == len(names) else [r.path for r in results]  # file names when unambiguous
    table = Table(title="emotion per file")
    for column in ("file", "emotion", "confidence", "arousal", "speech s"):
        table.add_column(column, justify="right" if column != "file" else "left")
    for name, r in zip(shown, results, strict=True):
        if r.error is not None:
            table.add_row(name, "[red]error[/red]", "", "", "")
        else:
            conf = "" if r.confidence is None else f"{r.confidence:.2f}"
            emotion = r.emotion or "[dim]no speech[/dim]"
            if r.uncertain:
                emotion = f"[yellow]{r.emotion}? (uncertain)[/yellow]"
            arousal = "" if r.arousal is None else f"{r.arousal:.2f}"
            table.add_row(name, emotion, conf, arousal, f"{r.speech_seconds:.1f}")
    Console().print(table)


# ---------------------------------------------------------------- calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``emostream calibrate FILE... --out PROFILE``: a saved speaker profile."""
    from emostream.apps.calibrate import check_readable, make_profile  # noqa: PLC0415
    from emostream.engine.plan import make_plan  # noqa: PLC0415

    check_readable(args.paths)
    plan = make_plan(config_from_args(args))
    profile = make_profile(args.paths, plan)
    out = Path(args.out)
    profile.save(out)
    print(
        f"profile for model {profile.model}: {profile.count:.0f} speech windows ({profile.speech_seconds:.1f} s of "
        f"speech) from {len(args.paths)} file(s) -> {out}; use it with --calibration {out}"
    )
    return 0


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """The live monitor (see :mod:`emostream.apps.live`)."""
    from emostream.apps.live import run_monitor  # noqa: PLC0415

    chosen = [flag for flag, on in (("--file", args.file), ("--stdin", args.stdin), ("--demo", args.demo)) if on]
    if len(chosen) > 1:
        raise EmoStreamError(f"{' and '.join(chosen)} given; choose one source")
    if args.fast and not (args.file or args.demo):
        _warn("--fast applies to --file and --demo only; ignored")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`/`docker stop` end a run as cleanly as Ctrl-C
    return run_monitor(args, config_from_args(args))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
