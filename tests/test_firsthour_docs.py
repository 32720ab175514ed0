"""Issue 19, items 19 and 20: the README's examples run as shown, and the checks .ci/run makes of it work."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import soxr

import emostream
from emostream.audio.files import load_mono
from emostream.inference.metadata import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLIP = ROOT / "tests" / "fixtures" / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac"


def _ci_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dir_of_the_package_lists_the_api() -> None:
    assert {"Monitor", "analyze_file", "load_model"} <= set(dir(emostream))


def test_the_readmes_python_example_runs_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    audio = load_mono(CLIP, 16000)
    narrow = soxr.resample(audio, 16000, 8000)
    block = (np.stack([narrow, 0.5 * narrow], axis=1) * 32767).astype(np.int16)
    sf.write(str(tmp_path / "call.wav"), audio, 16000)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {"block": block}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own example
    events = scope["events"]
    assert isinstance(events, list) and events
    assert any(e.to_dict()["type"] == "hop" and e.to_dict()["role"] == "customer" for e in events)


def test_readme_commands_are_found_in_shell_blocks_only() -> None:
    check = _ci_module("readme_check")
    text = (
        "```sh\nbash .ci/setup && .venv/bin/emostream\nemostream --file a.wav --fast  # comment --nope\n"
        "arecord -t raw | emostream --stdin --rate 16000\nexport T=$(python3 -c 'x')\n```\n"
        "```text\nemostream · source demo\n```\n```toml\nname = 'emostream --x'\n```\n"
    )
    assert check.readme_commands(text) == [[], ["--file", "a.wav", "--fast"], ["--stdin", "--rate", "16000"]]


def test_the_readme_marks_the_codes_default_model() -> None:
    check = _ci_module("readme_check")
    assert set(check.DEFAULT_MARK.findall(README)) == {DEFAULT_MODEL}


def test_the_wheel_check_names_a_missing_file(tmp_path: Path) -> None:
    import zipfile

    check = _ci_module("wheel_check")
    wheel = tmp_path / "emostream-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("emostream/__init__.py", "")
    lost = check.missing(wheel, ROOT)
    assert "streamer/api.py" in lost and "streamer/__init__.py" not in lost
    assert not any(p.endswith("README.md") for p in lost)


def test_the_readmes_alert_rule_is_the_one_alert_eval_measures() -> None:
    import tomllib

    from benchmarks.alert_eval import README_RULE
    from emostream.config import config_from_dict

    (block,) = re.findall(r"```toml\n(.*?)```", README, re.DOTALL)
    (rule,) = config_from_dict(tomllib.loads(block), "README.md").alerts
    assert rule == README_RULE
    commented = re.search(
        r"^# \[\[alerts\]\]\n((?:# \w.*\n)+)", (ROOT / "config.toml").read_text(encoding="utf-8"), re.M
    )
    assert commented is not None
    lines = [line[2:].split("#")[0] for line in commented.group(1).splitlines()]
    (example,) = config_from_dict(tomllib.loads("[[alerts]]\n" + "\n".join(lines)), "config.toml").alerts
    assert example == README_RULE


def test_every_relative_link_of_the_readme_and_docs_points_to_a_file() -> None:
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken
