"""Make ``models/voice_encoder/voice_encoder.npz`` from the Resemblyzer wheel (no PyTorch needed).

``python -m emostream.train.voice_encoder_export --wheel Resemblyzer-0.1.4-py3-none-any.whl --out DIR``

Resemblyzer 0.1.4 (Apache-2.0) ships ``resemblyzer/pretrained.pt``: a GE2E speaker encoder
(3 LSTM layers of 256 units over 40 mel bands, a 256-unit ReLU projection, L2-normalised),
trained by its authors on speaker-verification speech (LibriSpeech, VoxCeleb), none of it
emotional speech. The file is a legacy (pre-zip) ``torch.save`` pickle; :func:`read_legacy_torch`
reads its tensors with the standard library and NumPy (refusing any other file before it is
unpickled, and any class but tensors and dicts). The encoder's weights are written unchanged
(float32, PyTorch names) to an ``.npz`` that :mod:`emostream.frontend.voice` runs with NumPy.
(Two TFLite conversions were tried and dropped: Keras 3's LSTM only converts unrolled, which cost
2.6x the NumPy time and about 1 GB of memory once the interpreter packed the weights of each of the
480 unrolled steps; tf_keras's LSTM converts to the fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op,
:func:`fused_lstm_tflite`, which matches the NumPy network to 5e-7 but costs 1.5-1.7x its CPU on
x86 with ai-edge-litert: docs/performance.md, "seventh round".) The command prints the largest
difference from ``--reference`` outputs when given (an ``.npz`` with ``mel`` and ``ref`` made with
Resemblyzer itself).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, DatasetError
from emostream.frontend.voice import BLOCK_FRAMES, MEL_BANDS, MODEL_FILE, WEIGHT_NAMES

WEIGHTS_IN_WHEEL = "resemblyzer/pretrained.pt"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
"""sha256 of ``pretrained.pt`` in Resemblyzer 0.1.4; another file is refused before it is unpickled."""
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
    def __init__(self, kind: str, key: str, size: int) -> None:
        self.kind, self.key, self.size = kind, key, size


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)


def _rebuild_tensor(storage: _Storage, offset: int, shape: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


class _LegacyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not expected in a weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        _, kind, key, _location, size, _view = pid
        return _Storage(str(kind), str(key), int(size))


def read_legacy_torch(content: bytes) -> dict[str, Any]:
    """The object saved by a legacy ``torch.save``, its tensors as float32/int NumPy arrays."""
    f = io.BytesIO(content)
    for _ in range(3):  # magic number, protocol version, system info
        _LegacyUnpickler(f).load()
    obj = _LegacyUnpickler(f).load()
    keys = _LegacyUnpickler(f).load()
    tensors: list[_Tensor] = []
    _collect(obj, tensors)
    kinds = {t.storage.key: t.storage.kind for t in tensors}
    data: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        (size,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(_DTYPES[kinds[key]]) if key in kinds else np.dtype(np.float32)
        data[key] = np.frombuffer(f.read(size * dtype.itemsize), dtype=dtype)
    return _resolve(obj, data)  # type: ignore[no-any-return]


def _collect(obj: Any, out: list[_Tensor]) -> None:
    if isinstance(obj, _Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect(v, out)


def _resolve(obj: Any, data: dict[str, npt.NDArray[Any]]) -> Any:
    if isinstance(obj, _Tensor):
        flat = data[obj.storage.key]
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset :], shape=obj.shape, strides=tuple(s * item for s in obj.stride)
        )
        return np.array(view)
    if isinstance(obj, dict):
        return {k: _resolve(v, data) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, data) for v in obj)
    return obj


def weights_from_wheel(wheel: Path) -> tuple[dict[str, npt.NDArray[np.float32]], str]:
    """(the encoder's weights by PyTorch name, sha256 of ``pretrained.pt``) from the Resemblyzer wheel."""
    try:
        with zipfile.ZipFile(wheel) as z:
            content = z.read(WEIGHTS_IN_WHEEL)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"cannot read {WEIGHTS_IN_WHEEL} from {wheel} ({exc}); expected the Resemblyzer 0.1.4 wheel "
            "(`pip download --no-deps resemblyzer==0.1.4`)"
        ) from exc
    digest = hashlib.sha256(content).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise DatasetError(
            f"{WEIGHTS_IN_WHEEL} in {wheel} has sha256 {digest}; expected {WEIGHTS_SHA256} (Resemblyzer 0.1.4): "
            "download that release (`pip download --no-deps resemblyzer==0.1.4`)"
        )
    state = read_legacy_torch(content)["model_state"]
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, digest


def encoder_file(weights: dict[str, npt.NDArray[np.float32]]) -> bytes:
    """``voice_encoder.npz``: the encoder's float32 weights under their PyTorch names, byte-for-byte reproducible.

    An uncompressed zip of ``.npy`` entries in name order with a fixed timestamp (``np.savez``
    stamps the current time, so its digest would change on every export).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(n for n in weights if n in WEIGHT_NAMES):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(weights[name], dtype=np.float32), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue())
    return buf.getvalue()


FUSED_LSTM_LAYERS = 3
"""Layers of the encoder's LSTM; :func:`fused_lstm_tflite` puts the time mean of each after the embedding."""


def fused_lstm_tflite(weights: dict[str, npt.NDArray[np.float32]]) -> bytes:
    """The encoder as a float32 TFLite graph with TFLite's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op per layer.

    Input (1, 160, 40) float32 mel power, output (1, 1024) float32: the embedding (ReLU projection
    of the last step, L2-normalised), then the time mean of each LSTM layer's outputs (layers 1, 2,
    3; a config's ``layer_means`` pick theirs), as :class:`emostream.frontend.voice._Lstm` returns
    them. Built with tf_keras (Keras 2: its LSTM is what the converter fuses; Keras 3's is
    converted unrolled), which the ``train`` extra does not install: ``pip install
    tf-keras==<tensorflow's version>``. PyTorch's gate order i, f, g, o is Keras's i, f, c, o; its
    two biases are summed. The op keeps its state between invokes (TFLite's LSTM states are
    variables): call ``reset_all_variables()`` before each, or a block starts from the last one's
    state. Tried for issue 16 and not shipped (docs/performance.md, "seventh round").
    """
    try:
        import tensorflow as tf  # noqa: PLC0415
        import tf_keras  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            f"the fused LSTM graph needs TensorFlow and tf_keras ({exc}): `pip install 'emostream[train]'`, then "
            "`pip install tf-keras==X.Y.Z` with TensorFlow's version"
        ) from exc
    inputs = tf_keras.Input(shape=(BLOCK_FRAMES, MEL_BANDS), batch_size=1, dtype="float32")
    x, means = inputs, []
    for k in range(FUSED_LSTM_LAYERS):
        lstm = tf_keras.layers.LSTM(
            weights[f"lstm.weight_hh_l{k}"].shape[1], return_sequences=True, name=f"lstm{k + 1}"
        )
        x = lstm(x)
        lstm.set_weights(
            [
                weights[f"lstm.weight_ih_l{k}"].T,
                weights[f"lstm.weight_hh_l{k}"].T,
                weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"],
            ]
        )
        means.append(tf.reduce_mean(x, axis=1))
    projection = tf_keras.layers.Dense(weights["linear.weight"].shape[0], activation="relu", name="projection")
    embedding = tf.math.l2_normalize(projection(x[:, -1]), axis=1)
    projection.set_weights([weights["linear.weight"].T, weights["linear.bias"]])
    model = tf_keras.Model(inputs, tf_keras.layers.Concatenate()([embedding, *means]))
    content: bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return content


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emostream.train.voice_encoder_export", description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True, help="Resemblyzer-0.1.4-py3-none-any.whl")
    parser.add_argument("--out", type=Path, required=True, help="folder to write voice_encoder.npz into")
    parser.add_argument("--reference", type=Path, help=".npz with 'mel' (n, 160, 40) and Resemblyzer's 'ref' (n, 256)")
    args = parser.parse_args(argv)
    weights, source_sha = weights_from_wheel(args.wheel)
    content = encoder_file(weights)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MODEL_FILE).write_bytes(content)
    print(f"pretrained.pt sha256 {source_sha}")
    print(f"{MODEL_FILE} sha256 {hashlib.sha256(content).hexdigest()} ({len(content)} bytes)")
    if args.reference:
        from emostream.frontend.voice import run_encoder  # noqa: PLC0415

        ref = np.load(args.reference)
        got = np.stack([run_encoder(content, m) for m in ref["mel"]])
        print(f"largest difference from Resemblyzer: {float(np.abs(got - ref['ref']).max()):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
