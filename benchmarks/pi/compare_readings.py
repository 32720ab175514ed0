"""Compare two emostream JSONL outputs of the same command: a reference run and a run on another machine.

    python benchmarks/pi/compare_readings.py [--tol 1e-3] REFERENCE.jsonl OTHER.jsonl

Works on ``emostream analyze --jsonl`` output (one record per file, matched by ``path``) and on live
``--jsonl`` output (``hop`` records matched by channel, t_start and t_end; ``start``/``alert``/``end``
records counted). Labels (``emotion``), ``uncertain``, VAD speech figures and which hops have no scores
must be equal; probabilities (``scores``, ``smoothed``, ``confidence``, ``arousal``) may differ by at
most ``--tol`` (int8 TFLite kernels are not bit-identical across CPU architectures). Timing fields
(``latency_ms``, ``time``, ``session_id``) are ignored. Prints the largest difference found and exits
1 on any mismatch, 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROBABILITY_FIELDS = ("confidence", "arousal")
EXACT_FIELDS = ("emotion", "uncertain", "speech_ratio", "speech_seconds", "duration_s", "role")


def load(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a JSONL file, in order; SystemExit(2) when the file is not JSONL."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        print(f"compare_readings: cannot read {path} as JSON lines ({exc})", file=sys.stderr)
        raise SystemExit(2) from exc


def key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a record across runs: the file for analyze, the window for a hop."""
    if "path" in record and "type" not in record:
        return ("file", record["path"])
    kind = record.get("type")
    if kind == "hop":
        return ("hop", record["channel"], record["t_start"], record["t_end"])
    if kind == "alert":
        return ("alert", record.get("channel"), record.get("rule"), record.get("t_end"), record.get("state"))
    return (kind,)


def probability_pairs(
    k: tuple[Any, ...], ref: dict[str, Any], got: dict[str, Any], problems: list[str]
) -> list[tuple[str, Any, Any]]:
    """(field name, reference value, other value) of every probability in two matched records.

    A ``scores``/``smoothed`` group that is null in one run only, or has other labels, is added to
    ``problems`` instead.
    """
    pairs: list[tuple[str, Any, Any]] = [(f, ref.get(f), got.get(f)) for f in PROBABILITY_FIELDS]
    for group in ("scores", "smoothed"):
        a, b = ref.get(group), got.get(group)
        if a is None and b is None:
            continue
        if a is None or b is None:
            problems.append(f"{k}: {group} is {'null' if a is None else 'set'} in the reference only")
        elif set(a) != set(b):
            problems.append(f"{k}: {group} labels differ")
        else:
            pairs += [(f"{group}.{label}", a[label], b[label]) for label in a]
    return pairs


def compare(reference: list[dict[str, Any]], other: list[dict[str, Any]], tol: float) -> tuple[list[str], float, str]:
    """(mismatch messages, largest probability difference, where it was) between two runs."""
    problems: list[str] = []
    worst, where = 0.0, "-"
    ref_by_key = {key(r): r for r in reference}
    other_by_key = {key(r): r for r in other}
    for missing in sorted(set(ref_by_key) - set(other_by_key), key=str):
        problems.append(f"{missing} only in the reference")
    for extra in sorted(set(other_by_key) - set(ref_by_key), key=str):
        problems.append(f"{extra} only in the other run")
    for k, ref in ref_by_key.items():
        got = other_by_key.get(k)
        if got is None or k[0] not in ("file", "hop"):
            continue
        for field in EXACT_FIELDS:
            if ref.get(field) != got.get(field):
                problems.append(f"{k}: {field} {ref.get(field)!r} != {got.get(field)!r}")
        for name, a, b in probability_pairs(k, ref, got, problems):
            if a is None and b is None:
                continue
            if a is None or b is None:
                problems.append(f"{k}: {name} {a!r} != {b!r}")
                continue
            diff = abs(float(a) - float(b))
            if diff > worst:
                worst, where = diff, f"{k} {name} ({a} vs {b})"
            if diff > tol:
                problems.append(f"{k}: {name} differs by {diff:.4g} ({a} vs {b}), more than {tol:g}")
    return problems, worst, where


def main(argv: list[str] | None = None) -> int:
    """Command line: compare, print a one-line verdict (and the mismatches), return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--tol", type=float, default=1e-3, help="largest allowed probability difference")
    args = parser.parse_args(argv)
    reference, other = load(args.reference), load(args.other)
    if not reference:
        print(f"compare_readings: {args.reference} holds no records", file=sys.stderr)
        return 2
    problems, worst, where = compare(reference, other, args.tol)
    n_hops = sum(1 for r in reference if r.get("type") == "hop")
    n_files = sum(1 for r in reference if "path" in r and "type" not in r)
    what = f"{n_files} files" if n_files else f"{n_hops} hops"
    verdict = "same readings" if not problems else f"{len(problems)} MISMATCHES"
    print(
        f"{verdict}: {len(reference)} vs {len(other)} records ({what}); "
        f"largest probability difference {worst:.4g} at {where}"
    )
    for problem in problems[:20]:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
