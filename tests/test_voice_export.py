"""The Resemblyzer weights reader (legacy torch pickles without PyTorch) and the encoder file it writes."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emostream.errors import DatasetError
from emostream.frontend.voice import WEIGHT_NAMES, load_weights
from emostream.train.voice_encoder_export import encoder_file, read_legacy_torch, weights_from_wheel


@contextmanager
def fake_torch() -> Iterator[types.ModuleType]:
    """Just enough of a ``torch`` module for pickle to name ``torch.FloatStorage`` and the rebuild function."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args: Any) -> None:
        raise AssertionError("never called while saving")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def legacy_save(state: dict[str, np.ndarray]) -> bytes:
    """Write ``{"model_state": state}`` the way a legacy (pre-zip) ``torch.save`` lays it out."""
    with fake_torch() as torch:
        rebuild = torch._utils._rebuild_tensor_v2

        class Storage:
            def __init__(self, key: str, data: np.ndarray) -> None:
                self.key, self.data = key, data

        class Tensor:
            def __init__(self, storage: Storage, shape: tuple[int, ...]) -> None:
                self.storage, self.shape = storage, shape

            def __reduce__(self) -> Any:
                stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
                return rebuild, (self.storage, 0, self.shape, stride, False, OrderedDict())

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if isinstance(obj, Storage):
                    return ("storage", torch.FloatStorage, obj.key, "cpu", obj.data.size, None)
                return None

        storages = [
            Storage(str(i), np.ascontiguousarray(a, dtype=np.float32).ravel()) for i, a in enumerate(state.values())
        ]
        tensors = OrderedDict((k, Tensor(s, np.shape(a))) for (k, a), s in zip(state.items(), storages, strict=True))
        out = io.BytesIO()
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, out, protocol=2)
        Pickler(out, protocol=2).dump({"model_state": tensors, "step": 7})
        pickle.dump([s.key for s in storages], out, protocol=2)
        for s in storages:
            out.write(struct.pack("<q", s.data.size))
            out.write(s.data.tobytes())
        return out.getvalue()


def test_legacy_reader_gives_the_saved_arrays() -> None:
    rng = np.random.default_rng(0)
    state = {"lstm.weight_ih_l0": rng.standard_normal((8, 3)), "linear.bias": rng.standard_normal(4)}
    back = read_legacy_torch(legacy_save(state))
    assert back["step"] == 7
    for name, value in state.items():
        np.testing.assert_array_equal(back["model_state"][name], value.astype(np.float32))


def test_legacy_reader_refuses_other_classes() -> None:
    evil = io.BytesIO()
    for header in (1, 1001, {}):
        pickle.dump(header, evil, protocol=2)
    pickle.dump(Path("x"), evil, protocol=2)  # any class outside tensors and dicts
    with pytest.raises(pickle.UnpicklingError, match="not expected"):
        read_legacy_torch(evil.getvalue())


def test_encoder_file_is_reproducible_and_loads() -> None:
    rng = np.random.default_rng(1)
    weights = {name: rng.standard_normal(3).astype(np.float32) for name in WEIGHT_NAMES}
    first, second = encoder_file(weights), encoder_file(dict(reversed(list(weights.items()))))
    assert first == second
    loaded = load_weights(first)
    assert all(np.array_equal(loaded[k], weights[k]) for k in WEIGHT_NAMES)


def test_a_wheel_with_other_weights_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "Resemblyzer-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("resemblyzer/pretrained.pt", legacy_save({"linear.bias": np.zeros(2)}))
    with pytest.raises(DatasetError, match="sha256") as info:
        weights_from_wheel(wheel)
    assert "resemblyzer==0.1.4" in str(info.value)
    with pytest.raises(DatasetError, match="cannot read"):
        weights_from_wheel(tmp_path / "missing.whl")


@pytest.mark.slow
def test_fused_lstm_graph_is_the_numpy_network() -> None:
    """The tried fused-LSTM TFLite graph (docs/performance.md, seventh round): three fused ops, no loop, and the
    NumPy network's embedding and layer means to 1e-5 when its states are reset before each invoke."""
    pytest.importorskip("tf_keras")
    from emostream.frontend.voice import MODEL_FILE, _Lstm, voice_encoder_dir
    from emostream.inference.tflite import interpreter_class
    from emostream.train.voice_encoder_export import fused_lstm_tflite

    weights = load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes())
    cls, _ = interpreter_class()
    interp = cls(model_content=fused_lstm_tflite(weights), num_threads=1)
    interp.allocate_tensors()
    ops = [d["op_name"] for d in interp._get_ops_details()]
    assert ops.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 3 and "WHILE" not in ops
    mel = np.load(Path(__file__).parent / "fixtures" / "voice" / "resemblyzer_reference.npz")["mel"]
    blocks = np.stack([mel, mel[::-1], 0.1 * mel]).astype(np.float32)  # (3, 160, 40): three blocks in a row
    expected = _Lstm(weights)(blocks, (1, 2, 3))
    src, dst = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    for reset in (True, False):
        got = []
        for block in blocks:
            if reset:
                interp.reset_all_variables()
            interp.set_tensor(src, block[None])
            interp.invoke()
            got.append(interp.get_tensor(dst)[0].copy())
        if reset:
            np.testing.assert_allclose(np.stack(got), expected, atol=1e-5)
        else:  # the op's states are variables: without a reset the next block starts where the last one ended
            assert np.abs(got[1] - expected[1]).max() > 1e-3
