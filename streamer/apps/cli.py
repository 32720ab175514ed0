"""The ``emostream`` command line.

``emostream [options]`` runs the live monitor (microphone by default; ``--file``,
``--stdin`` or ``--demo`` instead); ``emostream devices`` lists input devices;
``emostream analyze PATH...`` classifies whole files. Further subcommands come from the
entry-point group ``emostream.commands``: each entry point is ``register(subparsers)``
and adds parsers that ``set_defaults(func=f)`` with ``f(args) -> int | None``.
"""

from __future__ import annotations

# Light imports only: numpy, the model and the rest load inside main(), after its signal handlers and the
# math-library thread limit are in place (a Ctrl-C during start-up gave a traceback; BLAS threads spun idle)
import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emostream import __version__
from emostream.apps import signals
from emostream.apps.signals import EXIT_INTERRUPTED, install_sigterm_handler, interrupted_exit_code
from emostream.apps.threads import bound_math_threads
from emostream.errors import AudioInputError, ConfigError, EmoStreamError

PLUGIN_GROUP = "emostream.commands"
BUILTIN_COMMANDS = ("devices", "analyze", "calibrate")
TRAIN_MODULES = ("tensorflow", "keras", "sklearn", "scipy", "matplotlib")
TRAIN_PACKAGE = "emostream.train"
TRAIN_COMMANDS = ("train", "evaluate")  # need the [train] extra (fetch-ravdess does not)
TRAIN_HINT = "install them with `pip install 'emostream[train]'`"
SERVER_MODULES = ("starlette", "uvicorn", "websockets", "prometheus_client", "anyio", "h11")
SERVER_HINT = "install them with `pip install 'emostream[server]'`"
__all__ = ["EXIT_INTERRUPTED", "build_parser", "install_sigterm_handler", "interrupted_exit_code", "main"]
DEBUG_ENV = "EMOSTREAM_DEBUG"


# ---------------------------------------------------------------- parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    from emostream.apps.options import add_calibration_options, add_model_options  # noqa: PLC0415
    from emostream.audio.codecs import RAW_FORMATS  # noqa: PLC0415

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


def build_parser(plugins: bool = False, command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``plugins`` also loads the ``emostream.commands`` entry points.

    ``command``: load only the entry point of that name when there is one (``emostream calls``
    need not import the training code: 70 MB); all of them otherwise.
    """
    from emostream.apps.options import add_calibration_options, add_model_options  # noqa: PLC0415

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
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="WAV/FLAC/OGG files or folders of them")
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
        _load_plugins(sub, command)
    return parser


def _load_plugins(sub: Any, command: str | None = None) -> None:
    from importlib import metadata  # noqa: PLC0415  (zipfile, email, csv: 20 ms a run that has no use for plugins)

    entry_points = list(metadata.entry_points(group=PLUGIN_GROUP))
    wanted = [ep for ep in entry_points if ep.name == command]
    for ep in wanted or entry_points:
        try:
            register = ep.load()
        except ImportError as exc:
            training = ep.value.startswith(TRAIN_PACKAGE) and ep.name in TRAIN_COMMANDS
            for name in TRAIN_COMMANDS if training else (ep.name,):
                if name not in sub.choices:
                    _add_unavailable(sub, name, exc, training=training)
            continue
        register(sub)


def _is_training_import(exc: ImportError, training: bool) -> bool:
    """True when ``exc`` is a missing training dependency (a known one, or any import of a training command)."""
    missing = (exc.name or "").split(".")[0]
    return missing in TRAIN_MODULES or (training and missing != "emostream")


def _extras_message(command: str, exc: ImportError) -> str:
    missing = (exc.name or "").split(".")[0] or str(exc)
    return f"`emostream {command}` needs the training extras ({missing} is not installed); {TRAIN_HINT}"


def _add_unavailable(sub: Any, name: str, exc: ImportError, training: bool = False) -> None:
    if _is_training_import(exc, training):
        message = _extras_message(name, exc)
        error: type[EmoStreamError] = ConfigError
    elif (exc.name or "").split(".")[0] in SERVER_MODULES:
        message = f"`emostream {name}` needs the server extras; {SERVER_HINT}"
        error = ConfigError
    else:
        message = f"`emostream {name}` cannot be loaded ({exc}); reinstall emostream"
        error = EmoStreamError
    # no option prefix: every argument after the command is taken as-is, whatever it looks like
    stub = sub.add_parser(name, help=f"(unavailable: {message})", add_help=False, prefix_chars="\0")
    stub.add_argument("rest", nargs="*")

    def fail(args: argparse.Namespace) -> int:
        raise error(message)

    stub.set_defaults(func=fail)


HELP_FLAGS = ("-h", "--help", "--version")


def _wants_plugins(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> bool:
    """Load plugins only for help or a command that is not built in (plugins may import heavy libraries).

    The command is found after any global options (``emostream --config cc.toml calls ...``);
    ``parser``: the plain :func:`build_parser` if one is at hand (else one is built).
    """
    split = _find_command(parser or build_parser(), argv)
    if split is None:
        return any(a in ("-h", "--help") for a in argv)
    return argv[split] not in BUILTIN_COMMANDS or any(a in ("-h", "--help") for a in argv[:split])


def _plugin_command(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> str | None:
    """The command word of ``argv`` when only its plugin is needed (not for help on every command)."""
    split = _find_command(parser or build_parser(), argv)
    if split is None or any(a in ("-h", "--help") for a in argv[:split]):
        return None
    return argv[split]


def _top_level_action(parser: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    """The top-level option ``token`` names (exactly, as ``--opt=value`` or by an unambiguous prefix)."""
    name = token.split("=", 1)[0]
    options = parser._option_string_actions
    if name in options:
        return options[name]
    matches = {options[o] for o in options if name.startswith("--") and o.startswith(name)}
    return matches.pop() if len(matches) == 1 else None


def _find_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int | None:
    """Index of the command word in ``argv`` (skipping top-level options and their values), else None."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return None
        if not token.startswith("-") or token == "-":
            return i
        action = _top_level_action(parser, token)
        if action is None:
            return None
        takes_value = action.nargs != 0 and "=" not in token
        i += 2 if takes_value else 1
    return None


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(command)
            return found
    return None


def hoist_global_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Move options given before a command (``emostream --model cnn analyze f.wav``) to after it.

    An option the command also takes (--model, --threads, --config, ...) is honoured as if
    written after the command (one written after it still wins); one it does not take
    (--file, --jsonl, ... before ``analyze``) raises ConfigError naming where it belongs.
    """
    argv = list(argv)
    split = _find_command(parser, argv)
    if not split or any(a in HELP_FLAGS for a in argv[:split]):
        return argv
    command = argv[split]
    sub = _subparser(parser, command)
    if sub is None:  # not a command: argparse reports it
        return argv
    moved: list[str] = []
    i = 0
    while i < split:
        token = argv[i]
        action = _top_level_action(parser, token)
        assert action is not None  # _find_command checked every token up to the command
        takes_value = action.nargs != 0 and "=" not in token
        given = argv[i : i + (2 if takes_value else 1)]
        name = token.split("=", 1)[0]
        long_name = next((o for o in action.option_strings if o.startswith("--")), name)
        same = [sub._option_string_actions.get(o) for o in action.option_strings]
        if not any(a is not None and a.dest == action.dest and a.nargs == action.nargs for a in same):
            raise ConfigError(
                f"{long_name} was given before `{command}`, but it is an option of the live monitor (`emostream "
                f"[options]`), which `emostream {command}` does not take; remove it, or see `emostream {command} "
                "--help` for that command's options (they go after the command)"
            )
        moved += [long_name + ("=" + token.split("=", 1)[1] if "=" in token else ""), *given[1:]]
        i += len(given)
    return [command, *moved, *argv[split + 1 :]]


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emostream`` console script; returns the exit code.

    Exit codes: 0 done, 2 bad configuration or flags, 3 unusable audio, 4 audio device,
    5 model, 6 data set, 130 Ctrl-C, 143 SIGTERM, 1 an internal error (a bug: the
    traceback is printed with ``EMOSTREAM_DEBUG=1``). Ctrl-C or SIGTERM during start-up is
    held until the command runs (:mod:`emostream.apps.signals`); the math libraries use one
    thread (:mod:`emostream.apps.threads`).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    bound_math_threads()
    with signals.handled():
        try:
            return _main(args_list)
        except KeyboardInterrupt:  # a second signal while an error was being reported
            return interrupted_exit_code()


def _main(args_list: list[str]) -> int:
    args: argparse.Namespace | None = None
    try:
        plain = build_parser()  # finds the command, and is the parser when no plugin is wanted (command unused)
        if _wants_plugins(args_list, plain):
            parser = build_parser(plugins=True, command=_plugin_command(args_list, plain))
        else:
            parser = plain
        args = parser.parse_args(hoist_global_options(parser, args_list))
        func: Callable[[argparse.Namespace], int | None] = args.func
        if not args.live:  # the live monitor releases a held signal once its engine runs (records written)
            signals.raise_if_held()
        code = func(args) or 0
    except EmoStreamError as exc:
        if _debug():
            traceback.print_exc()
        _error(str(exc))
        return exc.exit_code
    except ImportError as exc:
        command = getattr(args, "command", None) or "run"
        if not _is_training_import(exc, training=_is_training_command(command)):
            return _internal_error(exc)
        _error(_extras_message(command, exc))
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return interrupted_exit_code()
    except BrokenPipeError:  # the reader of our standard output went away (`| head -1`): a normal end
        _discard_stdout()
        return 0
    except Exception as exc:
        return _internal_error(exc)
    if code == EXIT_INTERRUPTED:
        return interrupted_exit_code()
    return code


def _is_training_command(command: str) -> bool:
    return command in TRAIN_COMMANDS


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (an embedding program's stream): leave it
        pass


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _internal_error(exc: BaseException) -> int:
    """An exception emostream did not expect: a short report (the traceback with EMOSTREAM_DEBUG=1), exit 1."""
    if _debug():
        traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc} (traceback above; please report it)")
    else:
        _error(
            f"internal error: {type(exc).__name__}: {exc}. This is a bug in emostream; please report it with the "
            f"traceback that the same command prints with {DEBUG_ENV}=1"
        )
    return EmoStreamError.exit_code


def _error(message: str) -> None:
    sys.stdout.flush()
    print(f"emostream: error: {message}", file=sys.stderr, flush=True)


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
    from emostream.apps.analyze import analyze_files, expand_paths  # noqa: PLC0415
    from emostream.apps.calibrate import check_readable, pooled_normalisation, profile_normalisation  # noqa: PLC0415
    from emostream.apps.options import config_from_args  # noqa: PLC0415
    from emostream.engine.plan import make_plan  # noqa: PLC0415

    plan = make_plan(config_from_args(args))
    paths = expand_paths(args.paths)  # a folder stands for its audio files, as in `emostream calls`
    if args.calibrate:
        check_readable(paths)
    normalisation = pooled_normalisation(paths, plan) if args.calibrate else profile_normalisation(plan)
    results = analyze_files(paths, plan, normalisation)
    for r in results:
        if r.error is not None:
            _error(r.error)
        if r.warning is not None:  # a truncated file: analysed as far as it goes, but the command exits 3
            _error(r.warning)
    if args.analyze_jsonl:
        for r in results:
            print(json.dumps(r.to_dict(), separators=(",", ":")), flush=True)
    else:
        _print_analysis_table(results)
    return AudioInputError.exit_code if any(r.error or r.warning for r in results) else 0


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
    from emostream.apps.analyze import expand_paths  # noqa: PLC0415
    from emostream.apps.calibrate import check_readable, make_profile  # noqa: PLC0415
    from emostream.apps.options import config_from_args  # noqa: PLC0415
    from emostream.engine.plan import make_plan  # noqa: PLC0415

    paths = expand_paths(args.paths)
    check_readable(paths)
    plan = make_plan(config_from_args(args))
    profile = make_profile(paths, plan)
    out = Path(args.out)
    profile.save(out)
    print(
        f"profile for model {profile.model}: {profile.count:.0f} speech windows ({profile.speech_seconds:.1f} s of "
        f"speech) from {len(paths)} file(s) -> {out}; use it with --calibration {out}"
    )
    return 0


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """The live monitor (see :mod:`emostream.apps.live`)."""
    from emostream.apps.live import run_monitor  # noqa: PLC0415
    from emostream.apps.options import config_from_args  # noqa: PLC0415

    chosen = [flag for flag, on in (("--file", args.file), ("--stdin", args.stdin), ("--demo", args.demo)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} given; expected one source: keep one of them")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ConfigError(
            f"--duration is {args.duration}; expected a positive number of seconds (e.g. --duration 60), "
            "or leave it out to run until the input ends"
        )
    _refuse_unused_source_options(args, chosen[0] if chosen else None)
    return run_monitor(args, config_from_args(args))


# the source options: where they apply (None = the microphone) and why they do not elsewhere
_SOURCE_OPTIONS: tuple[tuple[str, str, tuple[str | None, ...], str], ...] = (
    ("--rate", "rate", ("--stdin", None), "a recording's rate comes from its header"),
    ("--channels", "channels", ("--stdin", None), "a recording's channels come from its header"),
    ("--format", "pcm_format", ("--stdin",), "it names the sample format of raw PCM on standard input"),
    ("--device", "device", (None,), "it picks a microphone"),
    # None: the demo played when there is no microphone (with a microphone, make_source refuses --fast)
    ("--fast", "fast", ("--file", "--demo", None), "standard input is read as it arrives"),
)


def _refuse_unused_source_options(args: argparse.Namespace, source: str | None) -> None:
    """ConfigError for a source option the chosen source would ignore (``--rate`` with ``--file``, ...)."""
    chosen = source or "the microphone (the default source)"
    for flag, dest, sources, why in _SOURCE_OPTIONS:
        value = getattr(args, dest)
        if value in (None, False) or source in sources:
            continue
        where = " and ".join(s or "the microphone" for s in sources) if flag != "--fast" else "--file and --demo"
        shown = flag if value is True else f"{flag} {value}"
        raise ConfigError(
            f"{shown} was given with {chosen}, which does not use it ({why}); {flag} applies to {where} only: remove it"
        )


if __name__ == "__main__":
    sys.exit(main())
