"""``emostream calls DIR_OR_FILES --out DIR [--jobs N] [--ray [ADDRESS]]``: the command-line face of the call batch.

See :mod:`emostream.apps.calls.batch` for what it writes, :mod:`emostream.apps.calls.cluster` for
``--ray`` and ``docs/call_center.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emostream.apps.calls.batch import BatchOptions, Executor, ProcessPool, run_batch
from emostream.apps.options import add_calibration_options, add_model_options, config_from_args
from emostream.errors import ConfigError

CLI_DESCRIPTION = (
    "Analyse recorded calls (WAV/FLAC/OGG, G.711 WAV included; one party per channel) at full speed, one "
    "pipeline per channel, with the config's alert rules. Without [[channels]], a stereo call is channel 0 = "
    "customer, channel 1 = agent (metered, not analysed unless [privacy] allow_agent_analysis); mono = 'mixed'. "
    "Writes OUT/<call>.json, OUT/<call>.png, OUT/calls.csv and OUT/batch_summary.json; calls already "
    "summarised (same size and mtime) are skipped."
)


def register(sub: Any) -> None:
    """Add ``emostream calls`` to the CLI (entry point of the ``emostream.commands`` group)."""
    parser = sub.add_parser(
        "calls",
        help="batch-analyse recorded calls (one summary per call, CSV, PNG)",
        description=CLI_DESCRIPTION,
        epilog="Exit status 3 if any call could not be read (listed in batch_summary.json), 5 for an unusable model, "
        "2 for bad settings, --out or --ray (an unreachable cluster, ray not installed); 130 after Ctrl-C and 143 "
        "after SIGTERM (partial calls.csv and batch summary written). See docs/call_center.md.",
    )
    parser.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE", help="call recordings or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the summaries, PNGs and CSV")
    parser.add_argument(
        "--jobs", type=int, help="worker processes (default 1); with --ray: calls at once at most (default: every CPU)"
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the calls as Ray tasks (extra [cluster]): alone, on a local Ray instance; `auto`, HOST:6379 or "
        "ray://HOST:10001, on that cluster (every node must see the inputs at the same path)",
    )
    parser.add_argument("--bin-s", type=float, default=10.0, help="seconds per timeline bin in the summaries")
    parser.add_argument("--no-png", action="store_true", help="do not draw timeline PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser)
    add_calibration_options(parser)
    parser.set_defaults(func=cmd_calls, live=False)


def cmd_calls(args: argparse.Namespace) -> int:
    """``emostream calls``: run the batch and print a one-line result; exit 3 if any call failed."""
    if args.bin_s <= 0:
        raise ConfigError(f"--bin-s is {args.bin_s}; expected a positive number of seconds such as 10")
    from emostream.apps.cli import install_sigterm_handler  # noqa: PLC0415 - the CLI owns signal handling

    executor = _executor(args)
    options = BatchOptions(cfg=config_from_args(args), out_dir=Path(args.out), bin_s=args.bin_s, png=not args.no_png)
    install_sigterm_handler()  # SIGTERM stops the batch like Ctrl-C: workers ended, partial reports, exit 143
    result = run_batch(args.inputs, options, progress=not args.no_progress, executor=executor)
    processed = len(result.summaries) - len(result.skipped)
    line = (
        f"{processed} call(s) analysed, {len(result.skipped)} already done, {len(result.failed)} failed "
        f"in {result.elapsed_s:.1f} s -> {options.out_dir}/calls.csv"
    )
    if result.interrupted:
        left = result.total - len(result.summaries) - len(result.failed)
        line = f"interrupted: {line}; {left} call(s) not analysed (run the same command again to finish them)"
    print(line, flush=True)
    return result.exit_code


def _executor(args: argparse.Namespace) -> Executor:
    """Ray tasks for ``--ray``, else ``--jobs`` worker processes (always processes: one BLAS thread each,
    faster than a multi-threaded BLAS on small matrices)."""
    if args.ray is None:
        jobs = 1 if args.jobs is None else args.jobs
        if jobs < 1:
            raise ConfigError(f"--jobs is {jobs}; expected 1 or more worker processes")
        return ProcessPool(jobs=jobs, in_process=False)
    from emostream.apps.calls.cluster import RayExecutor, RaySettings, require_ray  # noqa: PLC0415 - only for --ray

    settings = RaySettings(address=args.ray, max_jobs=args.jobs)
    require_ray()
    settings.check_reachable()  # before the inputs are searched and the model is loaded
    return RayExecutor(settings)
