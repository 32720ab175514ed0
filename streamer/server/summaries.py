"""Call summaries written to ``[server] summary_dir``: atomically, never over another call's file.

A call id need only be unique among the calls open at once, so a later call may reuse an
earlier one's id: its summary then goes to ``<call_id>-2.json`` (``-3``...), never over the
earlier file. The summary is written to a temporary file in the same folder and linked to
its name (``link`` fails rather than replace an existing file); the temporary file is
removed whatever happens, so a full disk leaves no ``*.tmp`` behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

MAX_SUFFIX = 1000  # <call>-2.json ... <call>-1000.json, then <call>-<random>.json


def candidate_names(call_id: str) -> list[str]:
    """File names tried in turn for ``call_id``'s summary."""
    return [f"{call_id}.json", *(f"{call_id}-{k}.json" for k in range(2, MAX_SUFFIX + 1))]


def write_summary(folder: Path, call_id: str, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as ``folder/<call_id>.json`` (or the first free ``-N`` name); the path written.

    OSError when it cannot be written (no temporary file is left behind).
    """
    text = json.dumps(summary, indent=1) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=".summary-", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        for name in [*candidate_names(call_id), f"{call_id}-{uuid.uuid4().hex}.json"]:
            target = folder / name
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue
            return target
        raise FileExistsError(f"no free file name for call {call_id} in {folder}")
    finally:
        tmp.unlink(missing_ok=True)
