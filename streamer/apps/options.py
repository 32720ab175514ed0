"""Command-line options shared by the ``emostream`` commands, and the config they resolve to."""

from __future__ import annotations

import argparse
from typing import Any

from emostream.config import Config, apply_overrides, load_config
from emostream.inference.metadata import DEFAULT_MODEL


def add_model_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--model, --threads and --config."""
    parser.add_argument(
        "--model", help=f"shipped model name or path to a model .json/.tflite (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for the model (default 1)")
    parser.add_argument("--config", help="settings file (default: $EMOSTREAM_CONFIG, else built-in defaults)")
    parser.add_argument(
        "--labels",
        type=parse_labels,
        metavar="all|L1,L2,..",
        help="the emotions the reading chooses among, e.g. neutral,happy,sad,angry (calm read as neutral, "
        "the others dropped), or all (every label of the model); default: [labels] show",
    )


def parse_fold(text: str) -> dict[str, str]:
    """A ``[labels] fold`` given as ``calm=neutral,fearful=sad`` (model label = shown label); "" = none."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=SHOWN pairs, e.g. calm=neutral,fearful=sad")
    return {source.strip(): target.strip() for source, target in pairs}


def parse_labels(text: str) -> str | tuple[str, ...]:
    """--labels: "all", or comma-separated labels (checked against the model by the plan step)."""
    text = text.strip()
    return text if text == "all" else tuple(label.strip() for label in text.split(",") if label.strip())


def add_calibration_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--calibration PROFILE and --no-calibration."""
    parser.add_argument(
        "--calibration", metavar="PROFILE", help="start from a saved speaker profile (see `emostream calibrate`)"
    )
    parser.add_argument(
        "--no-calibration", action="store_true", help="no speaker calibration (the population's statistics only)"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command-line flags applied."""
    cfg = load_config(getattr(args, "config", None))
    overrides: dict[str, dict[str, Any]] = {
        "model": {"name": args.model, "num_threads": args.threads},
        "labels": {"show": getattr(args, "labels", None)},
        "calibration": {
            "profile": getattr(args, "calibration", None),
            "enabled": False if getattr(args, "no_calibration", False) else None,
        },
    }
    if getattr(args, "live", False):
        device = args.device
        overrides |= {
            "audio": {
                "device": int(device) if device is not None and device.isdigit() else device,
                "sample_rate_hz": args.rate,
                "channels": args.channels,
                "stdin_format": args.pcm_format,
            },
            "vad": {"aggressiveness": args.vad_aggressiveness},
            "windowing": {"window_hop_ms": args.hop_ms},
            "smoothing": {
                "method": args.smoothing,
                "time_constant_s": args.time_constant,
                "hysteresis": args.hysteresis,
                "min_dwell_s": args.min_dwell,
            },
            "output": {
                "jsonl": args.jsonl,
                "dashboard": False if args.no_dashboard else None,
                "timeline_seconds": args.timeline_seconds,
            },
        }
    return apply_overrides(cfg, overrides)
