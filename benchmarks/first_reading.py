"""Which emotion the first reading of a stream shows, against the clip's true emotion (issue 19, item 3).

    python -m benchmarks.first_reading --data DIR [--data DIR ...] [--clips 60] [--phone] [--model NAME|PATH]
        [--variant default --variant full_window ...] [--seed 0] [--out first.json]

Each clip (``--clips`` per corpus, drawn at random with ``--seed``, the same clips for every
variant) is one stream through :class:`emostream.Monitor` (the session of ``emostream --file``),
fed whole and closed. Per variant it prints: how many first shown labels are each emotion
(the clips' true emotions beside them), the median confidence of the first reading, the
median audio time at which it came, and the share of first readings that are right; and the
same for the first window's own scores (argmax, before smoothing) and for the clip's last
reading. ``--phone`` also runs every clip as an 8 kHz G.711 mu-law stream.

Variants (settings of the built-in config): ``default``; ``full_window`` (the first
reading after a full 2 s window: ``[windowing] first_window_ms`` unset); ``no_calibration``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

import emostream
from benchmarks.corpus import FloatArray, load_clips, read_clip
from emostream.audio.codecs import mulaw_decode, mulaw_encode
from emostream.config import Config
from emostream.engine.events import HopResult
from emostream.inference.model import EmotionModel

VARIANTS: dict[str, Callable[[Config], Config]] = {
    "default": lambda c: c,
    "full_window": lambda c: dataclasses.replace(c, windowing=dataclasses.replace(c.windowing, first_window_ms=None)),
    "no_calibration": lambda c: dataclasses.replace(c, calibration=dataclasses.replace(c.calibration, enabled=False)),
}


def phone(audio_16k: FloatArray) -> FloatArray:
    """The clip as an 8 kHz G.711 mu-law line delivers it (float32 at 8 kHz)."""
    narrow = soxr.resample(audio_16k, 16000, 8000).astype(np.float32)
    return mulaw_decode(mulaw_encode(np.clip(narrow, -1.0, 1.0)))


def stream(monitor: emostream.Monitor, audio: FloatArray) -> list[HopResult]:
    """One clip through a fresh stream of ``monitor``: its hops."""
    monitor.reset()
    events = monitor.feed(audio) + monitor.close()
    return [e for e in events if isinstance(e, HopResult)]


def first_reading(hops: list[HopResult], labels: tuple[str, ...]) -> dict[str, Any] | None:
    """The first shown reading, the first speech window's own argmax and the last shown label of one stream."""
    shown = [h for h in hops if h.emotion is not None]
    speech = [h for h in hops if h.scores is not None]
    if not shown or not speech:
        return None
    first = shown[0]
    raw = speech[0].scores or {}
    return {
        "emotion": first.emotion,
        "confidence": first.confidence,
        "t_s": first.t_end,
        "uncertain": first.uncertain,
        "raw": max(raw, key=lambda k: raw[k]),
        "last": shown[-1].emotion,
        "labels": list(labels),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and medians of one variant's first readings (``rows``: one per clip with a reading)."""
    n = len(rows)
    if not n:
        return {"clips": 0}
    return {
        "clips": n,
        "first_shown": dict(Counter(r["emotion"] for r in rows).most_common()),
        "first_window_argmax": dict(Counter(r["raw"] for r in rows).most_common()),
        "last_shown": dict(Counter(r["last"] for r in rows).most_common()),
        "truth": dict(Counter(r["truth"] for r in rows).most_common()),
        "happy_first": sum(r["emotion"] == "happy" for r in rows),
        "happy_first_window": sum(r["raw"] == "happy" for r in rows),
        "happy_true": sum(r["truth"] == "happy" for r in rows),
        "first_right": round(sum(r["emotion"] == r["truth"] for r in rows) / n, 3),
        "last_right": round(sum(r["last"] == r["truth"] for r in rows) / n, 3),
        "median_confidence": round(statistics.median(r["confidence"] for r in rows), 3),
        "median_first_s": round(statistics.median(r["t_s"] for r in rows), 2),
        "mean_first_s": round(statistics.mean(r["t_s"] for r in rows), 2),
        "uncertain_first": sum(bool(r["uncertain"]) for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_reading", description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", required=True, help="a corpus folder (repeatable)")
    parser.add_argument("--clips", type=int, default=60, help="clips per corpus (default 60)")
    parser.add_argument("--model", default=None, help="model name or path (default: the default model)")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    parser.add_argument("--phone", action="store_true", help="also as 8 kHz G.711 mu-law streams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)

    model = EmotionModel.load(args.model) if args.model else emostream.load_model()
    rng = random.Random(args.seed)
    clips = []
    for folder in args.data:
        found = load_clips(folder)
        clips += rng.sample(found, min(args.clips, len(found)))
    lines = ["16k"] + (["phone"] if args.phone else [])
    report: dict[str, Any] = {"model": str(model.path), "clips": len(clips), "seed": args.seed, "results": {}}
    for variant in args.variant or list(VARIANTS):
        cfg = VARIANTS[variant](Config())
        for line in lines:
            rate = 8000 if line == "phone" else 16000
            monitor = emostream.Monitor(model, sample_rate_hz=rate, config=cfg)
            rows: list[dict[str, Any]] = []
            for clip in clips:
                audio = read_clip(clip.path)
                reading = first_reading(stream(monitor, phone(audio) if line == "phone" else audio), model.labels)
                if reading is not None:
                    rows.append({**reading, "truth": clip.emotion, "corpus": clip.corpus})
            summary = summarise(rows)
            summary["per_corpus"] = {
                c: summarise([r for r in rows if r["corpus"] == c]) for c in sorted({r["corpus"] for r in rows})
            }
            report["results"][f"{variant}/{line}"] = summary
            print(
                f"{variant:15s} {line:5s} clips {summary['clips']:4d}  happy first {summary.get('happy_first', 0):4d} "
                f"(first window argmax {summary.get('happy_first_window', 0)}, true {summary.get('happy_true', 0)})  "
                f"first right {summary.get('first_right', 0):.3f}  last right {summary.get('last_right', 0):.3f}  "
                f"median conf {summary.get('median_confidence', 0):.2f}  at {summary.get('median_first_s', 0):.2f} s "
                f"(mean {summary.get('mean_first_s', 0):.2f} s)"
            )
            for corpus, part in summary["per_corpus"].items():
                print(f"    {corpus:12s} {part['clips']:4d} clips: first shown {part['first_shown']}")
            sys.stdout.flush()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
