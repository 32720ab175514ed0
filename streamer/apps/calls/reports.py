"""Report files of a call batch: per-call JSON (written atomically) and PNG, the batch CSV and summary."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from emostream.apps.calls.analysis import CallJob, ChannelRun
from emostream.inference.metadata import EMOTIONS


def plot_call(
    summary: dict[str, Any], runs: Sequence[ChannelRun], labels: Sequence[str], path: Path | BinaryIO
) -> None:
    """Timeline PNG (to a file or a binary stream): one panel per channel, smoothed scores over time, alerts shaded."""
    import matplotlib  # noqa: PLC0415 - optional dependency (emostream[calls])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.2 * len(runs) + 0.6), sharex=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, run in zip(axes[:, 0], runs, strict=True):
        t = np.array([h.t_end for h in run.hops])
        speech = np.array([h.is_speech for h in run.hops], dtype=bool)
        ax.fill_between(t, 0, 1, where=speech, color="0.92", step="pre", label="speech")
        if run.plan.analysed:
            for i, label in enumerate(labels):
                y = np.array([(h.smoothed or {}).get(label, np.nan) if h.is_speech else np.nan for h in run.hops])
                ax.plot(t, y, color=colors(i % 10), lw=1.2, label=label)
            for start, end in alert_spans(run.alerts, summary["duration_s"]):
                ax.axvspan(start, end, color="red", alpha=0.15)
        else:
            ax.text(0.5, 0.5, f"{run.plan.role}: not analysed", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, summary["duration_s"])
        ax.set_ylabel(run.plan.name, fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=6, ncol=5)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{summary['call']} ({summary['duration_s']:.0f} s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def alert_spans(alerts: Sequence[dict[str, Any]], duration_s: float) -> list[tuple[float, float]]:
    """(start, end) of each fired alert: from its run's start until it cleared (or the end of the call)."""
    spans: list[tuple[float, float]] = []
    open_at: dict[str, float] = {}
    for alert in alerts:
        if alert["state"] == "fired":
            open_at[alert["rule"]] = alert["t_start"]
        elif alert["rule"] in open_at:
            spans.append((open_at.pop(alert["rule"]), alert["t_end"]))
    return spans + [(start, duration_s) for start in open_at.values()]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


CSV_FIXED = (
    "call",
    "path",
    "status",
    "error",
    "duration_s",
    "channel",
    "role",
    "analysed",
    "speech_s",
    "dominant",
    "alerts",
)


def write_reports(calls: Sequence[CallJob], result: Any, *, out_dir: Path, model: str, png: bool, jobs: int) -> None:
    """``calls.csv`` (one row per call and channel, failures included) and ``batch_summary.json``."""
    labels = _labels(result.summaries.values())
    failed = dict(result.failed)
    rows: list[dict[str, Any]] = []
    for job in calls:
        summary = result.summaries.get(job.key)
        if summary is None:
            if str(job.path) in failed:
                rows.append({"call": job.key, "path": str(job.path), "status": "error", "error": failed[str(job.path)]})
            else:  # the batch was interrupted before this call was analysed
                rows.append({"call": job.key, "path": str(job.path), "status": "not analysed", "error": "interrupted"})
            continue
        status = "skipped" if job.key in result.skipped else "ok"
        for ch in summary["channels"]:
            row = {
                "call": job.key,
                "path": str(job.path),
                "status": status,
                "error": "",
                "duration_s": summary["duration_s"],
                "channel": ch["channel"],
                "role": ch["role"],
                "analysed": ch["analysed"],
                "speech_s": ch["speech_s"],
                "dominant": ch["dominant"] or "",
                "alerts": sum(1 for a in ch["alerts"] if a["state"] == "fired"),
            }
            row |= {f"share_{k}": ch["shares"].get(k, 0.0) if ch["analysed"] else "" for k in labels}
            row |= {f"peak_{k}": ch["peaks"][k]["score"] if k in ch["peaks"] else "" for k in labels}
            rows.append(row)
    columns = [*CSV_FIXED, *(f"share_{k}" for k in labels), *(f"peak_{k}" for k in labels)]
    with (out_dir / "calls.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    processed = len(result.summaries) - len(result.skipped)
    batch = {
        "inputs": len(calls),
        "processed": processed,
        "skipped": len(result.skipped),
        "failed": [{"path": p, "error": e} for p, e in result.failed],
        "interrupted": bool(getattr(result, "interrupted", False)),
        "not_analysed": len(calls) - len(result.summaries) - len(result.failed),
        "jobs": jobs,
        "model": model,
        "elapsed_s": round(result.elapsed_s, 3),
        "calls_per_minute": round(60.0 * processed / result.elapsed_s, 3) if processed and result.elapsed_s else None,
        "png": png,
        "calls": [
            {"call": j.key, "path": str(j.path), "json": f"{j.key}.json" if j.key in result.summaries else None}
            for j in calls
        ],
    }
    write_json_atomic(out_dir / "batch_summary.json", batch)


def _labels(summaries: Any) -> list[str]:
    labels: dict[str, None] = {}
    for summary in summaries:
        for ch in summary["channels"]:
            labels |= dict.fromkeys(ch["peaks"])
            labels |= dict.fromkeys(ch["shares"])
    return [e for e in EMOTIONS if e in labels] + sorted(k for k in labels if k not in EMOTIONS)
