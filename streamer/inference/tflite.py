"""The one TFLite boundary: interpreter discovery, int8 quantisation, batched invoke.

Used by the runtime (:class:`emostream.inference.model.EmotionModel`, the speech-embedding
front-end) and by training (export checks, float-vs-int8 evaluation), so both run a model
the same way. Needs no TensorFlow: ai-edge-litert or tflite-runtime suffice.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from emostream.errors import ModelError

Float32Array = npt.NDArray[np.float32]

INTERPRETER_MODULES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)
"""(module, pip package) of the interpreters tried, in order of preference."""


class Interpreter(Protocol):
    """The part of ``tf.lite.Interpreter`` emostream uses."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def resize_tensor_input(self, index: int, shape: list[int]) -> None: ...
    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> npt.NDArray[Any]: ...


def is_32bit_arm() -> bool:
    """Whether this Python is a 32-bit ARM build (also on a 64-bit kernel, where uname says aarch64)."""
    machine = platform.machine().lower()
    return sys.maxsize < 2**32 and (machine.startswith("arm") or machine == "aarch64")


def interpreter_class() -> tuple[type[Any], str]:
    """The TFLite interpreter class and its package: ai-edge-litert, else tflite-runtime, else TensorFlow."""
    for module_name, package in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, package
    if is_32bit_arm():
        raise ModelError(
            f"no TFLite interpreter is installed for this 32-bit ARM Python (machine {platform.machine()}, "
            f"Python {platform.python_version()}); ai-edge-litert has no 32-bit ARM build and tflite-runtime "
            "stopped at 2.14 (armv7l, Python 3.11 only). A 32-bit OS is not supported: install the 64-bit "
            "Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W) and `pip install emostream` there (see docs/pi.md). "
            "On 32-bit Python 3.11 only, `pip install tflite-runtime==2.14.0 'numpy<2'` may work, untested on a Pi"
        )
    raise ModelError(
        "no TFLite interpreter is installed; expected ai-edge-litert (or tflite-runtime). "
        "Install it with `pip install ai-edge-litert`"
    )


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence the interpreter's native start-up banner ("Created TensorFlow Lite XNNPACK delegate…").

    The banner is written by C++ straight to file descriptor 2, where it would break the dashboard;
    Python exceptions are unaffected.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quantize(x: Float32Array, detail: dict[str, Any]) -> npt.NDArray[Any]:
    """``x`` (float32) in the dtype of tensor ``detail``: round(x / scale + zero_point), clipped to the dtype."""
    return quantizer(detail)(x)


def quantizer(detail: dict[str, Any]) -> Callable[[Float32Array], npt.NDArray[Any]]:
    """:func:`quantize` for tensor ``detail``, its dtype, scale and limits looked up once (a runner calls it
    per window): round half to even, then clipped, in place on the one float32 temporary."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return lambda x: np.asarray(x, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    low, high = info.min, info.max

    def to_integer(x: Float32Array) -> npt.NDArray[Any]:
        y = np.asarray(x / scale)
        y += zero_point  # in place: x / scale + zero_point in the same dtype (Python scalars are weak)
        np.rint(y, out=y)
        np.minimum(np.maximum(y, low, out=y), high, out=y)
        return y.astype(dtype)

    return to_integer


def dequantize(y: npt.NDArray[Any], detail: dict[str, Any]) -> Float32Array:
    """Tensor values ``y`` as float32: (y - zero_point) * scale for integer tensors."""
    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    out: Float32Array = y.astype(np.float32)
    out -= zero_point  # in place: (y - zero_point) * scale in float32, without two more arrays
    out *= scale
    return out


def sha256_hex(content: bytes) -> str:
    """Hex SHA-256 of a model's bytes (what model metadata records)."""
    return hashlib.sha256(content).hexdigest()


def check_sha256(content: bytes, expected: str, *, source: str) -> None:
    """Raise :class:`ModelError` unless ``content`` hashes to ``expected``; ``source`` names the file."""
    digest = sha256_hex(content)
    if digest != expected:
        raise ModelError(
            f"{source} has sha256 {digest[:12]}…, its metadata expects {expected[:12]}…; "
            "the model and its .json do not belong together: re-export or reinstall"
        )


def read_model_bytes(path: Path) -> bytes:
    """The bytes of a .tflite file; :class:`ModelError` if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} ({exc}); reinstall emostream or re-export the model") from exc


class TfliteRunner:
    """One TFLite model with one input and one output tensor, run on float32 batches.

    ``run(x)`` takes x of shape (n, *input_shape), float32, quantises it if the model's input
    is integer, invokes, and returns the dequantised output, shape (n, *output_shape), float32.
    The batch axis is resized on demand. Not thread-safe: one runner per thread.
    """

    def __init__(self, content: bytes, *, num_threads: int = 1, source: str = "TFLite model") -> None:
        cls, self.backend = interpreter_class()
        self.source = source
        try:
            with native_stderr_silenced():
                self._interp: Interpreter = cls(model_content=content, num_threads=num_threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{source} is not a loadable TFLite model ({exc}); re-export it") from exc
        self._refresh_details()
        self._batch = int(self._input["shape"][0]) if len(self._input["shape"]) else 1

    def _refresh_details(self) -> None:
        self._input = self._interp.get_input_details()[0]
        self._output = self._interp.get_output_details()[0]
        self._input_shape = tuple(int(s) for s in self._input["shape"][1:])  # checked on every run
        self._quantize_input = quantizer(self._input)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Input tensor shape without the batch axis."""
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Output tensor shape without the batch axis."""
        return tuple(int(s) for s in self._output["shape"][1:])

    def quantization(self) -> dict[str, Any]:
        """Input/output dtype name, scale and zero point (as recorded in model metadata)."""
        inp, out = self._input, self._output
        return {
            "input_dtype": np.dtype(inp["dtype"]).name,
            "input_scale": float(inp["quantization"][0]),
            "input_zero_point": int(inp["quantization"][1]),
            "output_dtype": np.dtype(out["dtype"]).name,
            "output_scale": float(out["quantization"][0]),
            "output_zero_point": int(out["quantization"][1]),
        }

    def run(self, x: Float32Array) -> Float32Array:
        """Dequantised outputs for a float32 batch ``x`` of shape (n, *input_shape); shape (n, *output_shape)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ModelError(
                f"{self.source}: input of shape {x.shape[1:]} given, the model takes {self.input_shape}; "
                "pass (n, *input_shape) float32"
            )
        self._ensure_batch(x.shape[0])
        self._interp.set_tensor(self._input["index"], self._quantize_input(x))
        self._interp.invoke()
        return dequantize(self._interp.get_tensor(self._output["index"]), self._output)

    def _ensure_batch(self, batch: int) -> None:
        if batch != self._batch:
            self._interp.resize_tensor_input(self._input["index"], [batch, *self.input_shape])
            self._interp.allocate_tensors()
            self._refresh_details()
            self._batch = batch
