"""Packaging: every runtime/training folder is installed under the one name, `emostream`."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_under_emostream() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {"streamer": "emostream", "train": "emostream.train"}
    for folder, name in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(REPO / folder).parts
            package = ".".join((name, *relative))
            assert package in listed, f"{init.parent} holds package {package}, missing from pyproject.toml packages"
    assert config["package-dir"] == {"emostream": "streamer", "emostream.train": "train", "emostream.models": "models"}
    assert not any(p.split(".")[0] != "emostream" for p in listed), "only the emostream name is installed"
