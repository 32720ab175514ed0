"""Raspberry Pi packaging: the interpreter each platform gets, and the message when 32-bit ARM has none."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

from emostream.errors import ModelError
from emostream.inference import tflite

ROOT = Path(__file__).resolve().parents[1]


def requirements_for(machine: str, python: str, system: str = "Linux") -> dict[str, str]:
    """Runtime requirement name -> specifier that pip would install on that platform."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    env = {"platform_machine": machine, "platform_system": system, "python_version": python}
    chosen = [Requirement(d) for d in deps]
    return {r.name: str(r.specifier) for r in chosen if r.marker is None or r.marker.evaluate(env)}


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_64bit_linux_gets_ai_edge_litert_and_any_numpy(machine: str) -> None:
    reqs = requirements_for(machine, "3.11")
    assert "ai-edge-litert" in reqs
    assert "tflite-runtime" not in reqs
    assert reqs["numpy"] == ">=1.26"


def test_armv7l_python311_gets_tflite_runtime_and_numpy_1() -> None:
    reqs = requirements_for("armv7l", "3.11")
    assert "ai-edge-litert" not in reqs  # no armv7l wheel and no sdist: pip would fail
    assert reqs["tflite-runtime"] == ">=2.14"
    assert reqs["numpy"] == "<2,>=1.26"  # tflite-runtime 2.14 is built against NumPy 1.x


@pytest.mark.parametrize(("machine", "python"), [("armv7l", "3.13"), ("armv6l", "3.11")])
def test_32bit_arm_without_an_interpreter_build_installs_no_interpreter(machine: str, python: str) -> None:
    reqs = requirements_for(machine, python)
    assert "ai-edge-litert" not in reqs
    assert "tflite-runtime" not in reqs


def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def failing_import(name: str, package: str | None = None) -> ModuleType:
        if any(name == module for module, _ in tflite.INTERPRETER_MODULES):
            raise ImportError(name)
        return real_import(name, package)

    monkeypatch.setattr(tflite.importlib, "import_module", failing_import)


@pytest.mark.parametrize("machine", ["armv7l", "aarch64"])  # aarch64: 32-bit userland on a 64-bit kernel
def test_32bit_arm_without_interpreter_says_use_the_64bit_os(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    no_interpreter(monkeypatch)
    monkeypatch.setattr(tflite.platform, "machine", lambda: machine)
    monkeypatch.setattr(tflite.sys, "maxsize", 2**31 - 1)
    with pytest.raises(ModelError, match=r"32-bit OS is not supported: install the 64-bit\s+Raspberry Pi OS"):
        tflite.interpreter_class()


def test_64bit_without_interpreter_says_install_ai_edge_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    no_interpreter(monkeypatch)
    monkeypatch.setattr(tflite.platform, "machine", lambda: "aarch64")
    with pytest.raises(ModelError, match="pip install ai-edge-litert") as info:
        tflite.interpreter_class()
    assert "32-bit" not in str(info.value)
