"""Writing an evaluation run to ``reports/<run-name>/``: metrics JSON, per-class tables, confusion PNG."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.inference.metadata import EMOTIONS
from emostream.train.export import git_commit


def stamp(config: dict[str, Any]) -> dict[str, Any]:
    """Commit, UTC date and the full config, added to every report file."""
    return {"commit": git_commit(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "config": config}


def per_class(matrix: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (true rows)."""
    rows = []
    for i, name in enumerate(EMOTIONS):
        tp = float(matrix[i, i])
        support = float(matrix[i].sum())
        predicted = float(matrix[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(support)})
    return rows


def write_metrics(
    out: Path, protocol: str, summary: dict[str, Any], extra: dict[str, Any], config: dict[str, Any]
) -> Path:
    """``metrics_<protocol>.json`` with keys protocol, mean, folds, the extra figures and the stamp."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"metrics_{protocol}.json"
    data = {"protocol": protocol, **summary, **extra, **stamp(config)}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_class_table(out: Path, protocol: str, matrix: npt.NDArray[np.int64], config: dict[str, Any]) -> None:
    """``classes_<protocol>.md`` and ``.csv``: per-class precision/recall/F1 pooled over the test clips."""
    rows = per_class(matrix)
    with (out / f"classes_{protocol}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    st = stamp(config)
    lines = [
        f"# Per-class figures, protocol `{protocol}`",
        "",
        f"commit {st['commit']}, {st['date']}; test clips pooled over all splits.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |" for r in rows
    ]
    lines += ["", "Config:", "", "```json", json.dumps(config, indent=2), "```", ""]
    (out / f"classes_{protocol}.md").write_text("\n".join(lines), encoding="utf-8")


def write_confusion_png(out: Path, protocol: str, matrix: npt.NDArray[np.int64], title: str) -> Path:
    """``confusion_<protocol>.png``: row-normalised confusion matrix (matplotlib, Agg backend)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = out / f"confusion_{protocol}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
