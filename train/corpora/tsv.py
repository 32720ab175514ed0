"""Reading a corpus's ``data.tsv`` (the layout `emostream fetch-nemo` / `fetch-ased` write)."""

from __future__ import annotations

import csv
from pathlib import Path

from emostream.errors import DatasetError


def read_rows(root: Path, required: tuple[str, ...], corpus: str, fetch: str) -> list[dict[str, str]]:
    """Rows of ``root/data.tsv`` as dicts; :class:`DatasetError` naming what is missing and how to get it."""
    if not root.is_dir():
        raise DatasetError(f"{corpus} folder {root} does not exist; download it with `emostream {fetch} DEST`")
    table = root / "data.tsv"
    try:
        with table.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{table}: no data.tsv in the {corpus} folder; expected the layout `emostream {fetch}` writes"
        ) from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{table}: unreadable ({exc}); fetch the corpus again with `emostream {fetch}`") from exc
    if not rows:
        raise DatasetError(f"{table}: no rows; fetch the corpus again with `emostream {fetch}`")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise DatasetError(f"{table}: columns {missing} missing; expected {list(required)} (tab-separated)")
    return rows
