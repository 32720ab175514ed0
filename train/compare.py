"""Print a Markdown table comparing evaluation reports: mean ± fold-to-fold std, and paired differences.

``python -m emostream.train.compare --protocol emobox --baseline DIR DIR ...`` reads
``DIR/metrics_<protocol>.json`` of each report folder (written by ``emostream evaluate``) and
prints one row per folder: UA and WA as mean ± sample std over the splits (percent), the
per-split UA, and — with ``--baseline`` — the paired UA difference to the baseline folder
(mean ± std of the per-split differences: the spread that matters when both ran on the
same folds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from emostream.errors import DatasetError


def load_report(folder: Path, protocol: str) -> dict[str, Any]:
    """``folder/metrics_<protocol>.json`` as a dict; :class:`DatasetError` naming the file when missing."""
    path = folder / f"metrics_{protocol}.json"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; run `emostream evaluate --protocol {protocol} --out {folder}`")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def split_figures(report: dict[str, Any], key: str = "ua") -> dict[str, float]:
    """Per-split figure ``key`` (fraction) keyed by split name."""
    return {str(f["fold"]): float(f[key]) for f in report["folds"]}


def _pm(values: list[float], *, signed: bool = False) -> str:
    """'mean ± std' in percent (sample std; no ± for a single split); ``signed`` prints the mean's sign."""
    arr = np.asarray(values) * 100.0
    mean = f"{arr.mean():+.1f}" if signed else f"{arr.mean():.1f}"
    return mean if arr.size < 2 else f"{mean} ± {arr.std(ddof=1):.1f}"


def _label(report: dict[str, Any], folder: Path) -> str:
    config = report.get("config", {})
    train = config.get("train", {})
    family = train.get("family", report.get("family", "?"))
    k = train.get("select_k", 0)
    if config.get("features", {}).get("feature_set") == "frames":
        inputs = "MFCC frames"
    else:
        inputs = f"K = {k}" if k else "all columns"
    return f"{family}, {inputs} (`{folder.name}`)"


def table(folders: list[Path], protocol: str, baseline: Path | None = None) -> str:
    """The Markdown comparison table of ``folders`` for ``protocol`` (see the module docstring)."""
    base = split_figures(load_report(baseline, protocol)) if baseline is not None else None
    header = ["model", "UA % (mean ± std)", "WA % (mean ± std)", "UA per split %"]
    if base is not None and baseline is not None:
        header.append(f"UA − `{baseline.name}` (paired, points)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for folder in folders:
        report = load_report(folder, protocol)
        ua, wa = split_figures(report), split_figures(report, "wa")
        row = [
            _label(report, folder),
            _pm(list(ua.values())),
            _pm(list(wa.values())),
            " / ".join(f"{v * 100:.1f}" for v in ua.values()),
        ]
        if base is not None:
            if set(ua) != set(base):
                raise DatasetError(f"{folder} has splits {sorted(ua)} but the baseline has {sorted(base)}")
            diff = [ua[s] - base[s] for s in base]
            row.append(_pm(diff, signed=True))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the table; errors as messages with their exit code."""
    parser = argparse.ArgumentParser(prog="python -m emostream.train.compare", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="report folders written by `emostream evaluate`")
    parser.add_argument("--protocol", default="emobox", help="which metrics_<protocol>.json to read (default emobox)")
    parser.add_argument("--baseline", type=Path, help="report folder to take paired per-split differences against")
    args = parser.parse_args(argv)
    try:
        print(table(args.folders, args.protocol, args.baseline))
    except DatasetError as exc:
        print(f"error: {exc}")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
