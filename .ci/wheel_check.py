"""Check that a built wheel holds every file the package needs. Run by .ci/run after `python -m build`:

    python .ci/wheel_check.py dist/emostream-X-py3-none-any.whl

Every file git tracks under streamer/ (installed as ``emostream``), train/ (``emostream.train``) and
models/ (``emostream.models``) must be in the wheel, except the few that are documentation or research
records only (:data:`NOT_SHIPPED`). A new sub-folder that is missing from ``[tool.setuptools] packages``
in pyproject.toml is left out silently by setuptools; this names it. Exits 1 listing what is missing.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import zipfile
from pathlib import Path

ROOTS = {"streamer/": "emostream/", "train/": "emostream/train/", "models/": "emostream/models/"}
NOT_SHIPPED = ("models/*.report.json", "models/*/*.report.json", "*/README.md", "models/*.md")


def tracked(repo: Path) -> list[str]:
    """Files git tracks under the package folders, repository-relative."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", *ROOTS], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line]


def missing(wheel: Path, repo: Path) -> list[str]:
    """Tracked package files (repository-relative) that the wheel lacks."""
    names = set(zipfile.ZipFile(wheel).namelist())
    lost: list[str] = []
    for path in tracked(repo):
        if any(fnmatch.fnmatch(path, pattern) for pattern in NOT_SHIPPED):
            continue
        prefix = next(p for p in ROOTS if path.startswith(p))
        if ROOTS[prefix] + path[len(prefix) :] not in names:
            lost.append(path)
    return lost


def main() -> int:
    wheel = Path(sys.argv[1])
    repo = Path(__file__).resolve().parent.parent
    lost = missing(wheel, repo)
    for path in lost:
        print(f"wheel check: {path} is not in {wheel.name}", file=sys.stderr)
    if lost:
        print(
            "wheel check: add its folder to [tool.setuptools] packages (and package-data) in pyproject.toml",
            file=sys.stderr,
        )
        return 1
    print(f"wheel check: {wheel.name} holds every tracked file of streamer/, train/ and models/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
