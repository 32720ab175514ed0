"""TFLite export: full-integer int8 (shipped heads), float16 weights (the voice student) and float32
(for the int8-vs-float check), plus metadata.

TFLiteConverter.from_concrete_functions fails with a READ_VARIABLE error during
calibration on TF 2.21, so the Keras model is first exported as a SavedModel and
converted from there.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS, ModelMetadata
from emostream.inference.tflite import TfliteRunner, sha256_hex
from emostream.train.fit import Fitted
from emostream.train.models import import_keras

F32 = npt.NDArray[np.float32]


def representative_sample(x: F32, n: int, seed: int) -> F32:
    """Up to ``n`` rows of normalised inputs, drawn without replacement with ``seed``."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(x), size=min(n, len(x)), replace=False)
    return np.asarray(x[np.sort(take)], dtype=np.float32)


def to_tflite(model: Any, representative: F32 | None, *, float16: bool = False) -> bytes:
    """Convert a Keras model: int8 in/out with ``representative`` normalised inputs, or float32 when None
    (float16 weights, float32 arithmetic and input/output when ``float16``)."""
    if float16 and representative is not None:
        raise ValueError("float16 export takes no representative sample (it is not quantised)")
    import_keras()
    import tensorflow as tf  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if representative is not None:
            rep = representative

            def gen() -> Iterator[list[F32]]:
                for row in rep:
                    yield [row[None].astype(np.float32)]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = gen
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return bytes(converter.convert())


def tensor_quantization(content: bytes) -> dict[str, Any]:
    """Input/output dtype, scale and zero point of a TFLite model."""
    return TfliteRunner(content, source="exported model").quantization()


def git_commit(repo: Path | None = None) -> str:
    """Short commit hash of the checkout (with ``-dirty`` if train/ has local changes), or "unknown"."""
    cwd = str(repo or Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "train"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def write_model(
    out_dir: Path,
    *,
    name: str,
    family: str,
    fitted: Fitted,
    feature_cfg: FeatureConfig,
    vad_cfg: VadConfig,
    representative: F32,
    training: dict[str, Any],
    metrics: dict[str, Any],
    float_copy: bool = False,
    representative_normalised: bool = False,
    calibration: dict[str, Any] | None = None,
    reading: dict[str, Any] | None = None,
) -> tuple[ModelMetadata, bytes, bytes]:
    """Export ``fitted`` as ``out_dir/NAME.tflite`` (int8) + ``NAME.json``; optionally ``NAME.float.tflite``.

    ``representative`` holds raw (un-normalised) window features for the int8 quantisation,
    or, with ``representative_normalised``, model inputs as the network sees them (a
    speaker-calibrated model's: each normalised with its speaker's blended statistics).
    The TFLite model always takes normalised input; the runtime normalises with
    ``normalization`` (population) or with the speaker calibration when the metadata has a
    ``calibration`` section (``{"prior_windows": n0, ...}``). ``reading``: the metadata's
    ``reading`` section (:meth:`emostream.engine.reading.ReadingConfig.to_dict`).
    Returns the metadata, the int8 and the float32 model bytes.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = np.asarray(representative, dtype=np.float32) if representative_normalised else fitted.prepare(representative)
    int8 = to_tflite(fitted.model, rep)
    flt = to_tflite(fitted.model, None)
    tflite_path = out_dir / f"{name}.tflite"
    tflite_path.write_bytes(int8)
    if float_copy:
        (out_dir / f"{name}.float.tflite").write_bytes(flt)
    quant = {"type": "int8", **tensor_quantization(int8), "representative_samples": len(rep)}
    meta = ModelMetadata(
        name=name,
        family=family,
        labels=EMOTIONS,
        feature_config=feature_cfg,
        vad_config=vad_cfg,
        norm_mean=fitted.mean,
        norm_std=fitted.std,
        input_shape=tuple(int(s) for s in rep.shape[1:]),
        selected_features=fitted.selected,
        tflite_file=tflite_path.name,
        sha256=sha256_hex(int8),
        quantization=quant,
        training=training,
        metrics=metrics,
        commit=git_commit(),
        calibration=calibration,
        reading=reading,
        # the network's own output width says whether it has the arousal column after the labels
        arousal_output=int(fitted.model.output_shape[-1]) == len(EMOTIONS) + 1,
    )
    meta.check()
    meta.save(out_dir / f"{name}.json")
    return meta, int8, flt


def run_tflite(content: bytes, x: F32) -> F32:
    """Outputs of a TFLite model (int8 or float) for normalised inputs ``x``: (n, n_labels) probabilities,
    then the arousal column of a model that has one (n, n_labels + 1)."""
    return TfliteRunner(content, num_threads=2, source="exported model").run(x)
