"""Full-integer (int8) variant of the vendored speech-embedding model (training side; needs TensorFlow).

    python -m emostream.train.quantize_embedding --out models/speech_embedding/

Only the float TFLite file ``embedding_model.tflite`` exists (openWakeWord 0.5.1 ships no
SavedModel), so this script:

1. reads the graph of the vendored file from its flatbuffer (operators, their options and
   constant tensors: a plain CNN of PAD, CONV_2D, LEAKY_RELU, MAXIMUM and MAX_POOL_2D) and
   rebuilds it as a float ``tf.function`` with the same weights;
2. checks that the rebuilt graph reproduces the vendored file's outputs (run by the runtime's
   interpreter) on real log-mel blocks to within ``--rebuild-tolerance``;
3. converts it with ``tf.lite.TFLiteConverter`` to int8 weights and activations (float32 input
   and output, so the runtime feeds it exactly what it feeds the float model), calibrated on
   real log-mel blocks computed by :class:`emostream.frontend.embedding.SpeechEmbedder`
   itself (``mel_blocks``: the same mel and per-block 80 dB floor as at run time): the
   RAVDESS fixture clips plus ``--calibration-clips`` clips of actors 1-20 of the RAVDESS
   speech set when it is found;
4. compares int8 with float on held-out speech (actors 21-24, or the fixtures of Actor_02
   without the data set): cosine similarity and absolute error of the 96-d embeddings;
5. times both files with the runtime's interpreter pinned to one core (CPU time, user + system,
   per call at batch 1 and 4), and writes ``embedding_model.int8.tflite`` into ``--out``
   with a JSON report (``--report``, default ``<out>/embedding_model.int8.report.json``).

The runtime never imports this module (nor TensorFlow): it only loads the resulting file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from emostream.frontend.embedding import (
    EMBEDDING_DIM,
    EMBEDDING_FRAMES,
    EMBEDDING_MODEL_FILE,
    EMBEDDING_MODEL_INT8_FILE,
    MEL_BINS,
    SAMPLE_RATE_HZ,
    EmbeddingConfig,
    SpeechEmbedder,
    speech_embedding_dir,
)
from emostream.inference.tflite import interpreter_class, native_stderr_silenced, sha256_hex

FloatArray = npt.NDArray[np.float32]

REPO = Path(__file__).resolve().parent.parent
FIXTURE_CLIPS = REPO / "tests" / "fixtures" / "ravdess"
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "ravdess-speech-16k"
CALIBRATION_ACTORS = range(1, 21)
HELD_OUT_ACTORS = range(21, 25)
BLOCK_STRIDE_FRAMES = 25
"""Mel frames between the blocks taken from a clip (the runtime's accurate stride)."""
SUPPORTED_OPS = ("PAD", "CONV_2D", "LEAKY_RELU", "MAXIMUM", "MAX_POOL_2D")


@dataclass
class GraphOp:
    """One operator of the vendored graph: its kind, options and inputs (constants as arrays, else tensor ids)."""

    kind: str
    options: dict[str, Any]
    inputs: list[int]
    outputs: list[int]
    constants: dict[int, npt.NDArray[Any]] = field(default_factory=dict)


def read_graph(path: Path) -> tuple[list[GraphOp], int, int]:
    """Operators of a single-subgraph TFLite file, with the constant tensors they read; (ops, input id, output id)."""
    from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    if len(model.subgraphs) != 1:
        raise ValueError(f"{path}: {len(model.subgraphs)} subgraphs; expected 1")
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32}
    ops: list[GraphOp] = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if kind not in SUPPORTED_OPS:
            raise ValueError(f"{path}: operator {kind} is not supported by the rebuild ({SUPPORTED_OPS})")
        options = dict(vars(op.builtinOptions)) if op.builtinOptions is not None else {}
        constants: dict[int, npt.NDArray[Any]] = {}
        for i in op.inputs:
            tensor = graph.tensors[i]
            data = model.buffers[tensor.buffer].data
            if data is not None and len(data):
                arr = np.frombuffer(bytes(bytearray(data)), dtype=dtypes[tensor.type])
                constants[int(i)] = arr.reshape([int(s) for s in tensor.shape]).copy()
        ops.append(GraphOp(kind, options, [int(i) for i in op.inputs], [int(o) for o in op.outputs], constants))
    return ops, int(graph.inputs[0]), int(graph.outputs[0])


def build_float_function(ops: Sequence[GraphOp], input_id: int, output_id: int) -> Any:
    """The graph as a float ``tf.function`` taking (batch, 76, 32, 1) and returning (batch, 1, 1, 96)."""
    import tensorflow as tf  # noqa: PLC0415

    padding = {0: "SAME", 1: "VALID"}  # tflite Padding enum

    def forward(x: Any) -> Any:
        values: dict[int, Any] = {input_id: x}

        def arg(op: GraphOp, k: int) -> Any:
            i = op.inputs[k]
            return tf.constant(op.constants[i]) if i in op.constants else values[i]

        for op in ops:
            if op.kind == "PAD":
                out = tf.pad(arg(op, 0), op.constants[op.inputs[1]])
            elif op.kind == "CONV_2D":
                if op.options["fusedActivationFunction"] != 0:
                    raise ValueError("fused activations are not supported by the rebuild")
                kernel = np.transpose(op.constants[op.inputs[1]], (1, 2, 3, 0))  # OHWI -> HWIO
                out = tf.nn.conv2d(
                    arg(op, 0),
                    tf.constant(kernel),
                    strides=[1, op.options["strideH"], op.options["strideW"], 1],
                    padding=padding[op.options["padding"]],
                    dilations=[1, op.options["dilationHFactor"], op.options["dilationWFactor"], 1],
                )
                out = tf.nn.bias_add(out, tf.constant(op.constants[op.inputs[2]]))
            elif op.kind == "LEAKY_RELU":
                out = tf.nn.leaky_relu(arg(op, 0), alpha=op.options["alpha"])
            elif op.kind == "MAXIMUM":
                out = tf.maximum(arg(op, 0), arg(op, 1))
            else:  # MAX_POOL_2D
                if op.options["fusedActivationFunction"] != 0:
                    raise ValueError("fused activations are not supported by the rebuild")
                out = tf.nn.max_pool2d(
                    arg(op, 0),
                    ksize=[op.options["filterHeight"], op.options["filterWidth"]],
                    strides=[op.options["strideH"], op.options["strideW"]],
                    padding=padding[op.options["padding"]],
                )
            values[op.outputs[0]] = out
        return values[output_id]

    signature = [tf.TensorSpec([None, EMBEDDING_FRAMES, MEL_BINS, 1], tf.float32, name="input_1")]
    return tf.function(forward, input_signature=signature)


class TfliteEmbedding:
    """One embedding TFLite file run by the runtime's interpreter (one thread), resizing the batch as needed."""

    def __init__(self, content: bytes) -> None:
        cls, self.backend = interpreter_class()
        with native_stderr_silenced():
            self.interp = cls(model_content=content, num_threads=1)
            self.interp.allocate_tensors()
        self.input_index = int(self.interp.get_input_details()[0]["index"])
        self.output_index = int(self.interp.get_output_details()[0]["index"])
        self.batch = 1

    def __call__(self, blocks: FloatArray) -> FloatArray:
        n = blocks.shape[0]
        if n != self.batch:
            self.interp.resize_tensor_input(self.input_index, [n, EMBEDDING_FRAMES, MEL_BINS, 1], strict=True)
            self.interp.allocate_tensors()
            self.batch = n
        self.interp.set_tensor(self.input_index, blocks)
        self.interp.invoke()
        return np.array(self.interp.get_tensor(self.output_index), dtype=np.float32).reshape(n, EMBEDDING_DIM)

    def run(self, blocks: FloatArray, batch: int = 64) -> FloatArray:
        """Embeddings of any number of blocks, in batches."""
        parts = [self(blocks[i : i + batch]) for i in range(0, blocks.shape[0], batch)]
        return np.concatenate(parts) if parts else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)


def clip_blocks(paths: Sequence[Path], stride: int = BLOCK_STRIDE_FRAMES) -> FloatArray:
    """The model inputs the runtime computes for each clip: every ``stride``-th end frame, shape (n, 76, 32, 1)."""
    embedder = SpeechEmbedder(EmbeddingConfig(stride_frames=stride, history_frames=EMBEDDING_FRAMES))
    parts = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE_HZ:
            raise ValueError(f"{path}: {rate} Hz; expected {SAMPLE_RATE_HZ}")
        embedder.reset()
        embedder.process(audio.mean(axis=1), keep_from_frame=0)
        parts.append(embedder.mel_blocks(embedder.grid_ends(0, embedder.mel_end + 3)))
    if not parts:
        return np.zeros((0, EMBEDDING_FRAMES, MEL_BINS, 1), dtype=np.float32)
    return np.concatenate(parts)


def actor_clips(root: Path, actors: range, count: int) -> list[Path]:
    """``count`` clips spread evenly (every k-th in sorted order) over the given actors' folders."""
    paths = sorted(p for a in actors for p in (root / f"Actor_{a:02d}").glob("*.*") if p.suffix in {".flac", ".wav"})
    if count <= 0 or not paths:
        return []
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def convert_int8(function: Any, calibration: FloatArray) -> bytes:
    """Full-integer conversion (int8 weights and activations, float32 input and output)."""
    import tensorflow as tf  # noqa: PLC0415

    def representative() -> Iterator[list[FloatArray]]:
        for block in calibration:
            yield [block[np.newaxis]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    return bytes(converter.convert())


def compare(reference: FloatArray, other: FloatArray) -> dict[str, float]:
    """Cosine similarity (per embedding) and absolute error of ``other`` against ``reference``, both (n, 96)."""
    dot = np.sum(reference * other, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    cosine = dot / np.maximum(norms, 1e-12)
    err = np.abs(reference - other)
    return {
        "embeddings": int(reference.shape[0]),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "cosine_p01": float(np.quantile(cosine, 0.01)),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "rms_error_over_rms_value": float(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(reference**2))),
        "max_abs_value": float(np.abs(reference).max()),
    }


def pin_one_core() -> str:
    """Pin this process to its lowest allowed core; a description for the report."""
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        return "not pinned"
    return f"core {core}"


def _cost(func: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median over 5 rounds of the mean CPU (user + system) and wall milliseconds per call."""
    func()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(5):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(repeats):
            func()
        cpu.append((time.process_time() - cpu0) / repeats * 1e3)
        wall.append((time.perf_counter() - wall0) / repeats * 1e3)
    return float(np.median(cpu)), float(np.median(wall))


def measure_cost(models: dict[str, bytes], blocks: FloatArray, repeats: int) -> list[dict[str, Any]]:
    """CPU and wall milliseconds per call and per embedding, batch 1 and 4, for each model (interleaved)."""
    rows = []
    for batch in (1, 4):
        x = np.ascontiguousarray(blocks[:batch])
        for name, content in models.items():
            model = TfliteEmbedding(content)
            cpu, wall = _cost(functools.partial(model, x), repeats)
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "cpu_ms_per_call": round(cpu, 4),
                    "wall_ms_per_call": round(wall, 4),
                    "cpu_ms_per_embedding": round(cpu / batch, 4),
                    "backend": model.backend,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emostream.train.quantize_embedding", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for embedding_model.int8.tflite")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("EMOSTREAM_RAVDESS", str(DEFAULT_DATA))),
        help="RAVDESS speech 16 kHz (Actor_XX folders); fixtures only if missing (default: %(default)s)",
    )
    parser.add_argument("--calibration-clips", type=int, default=300, help="clips of actors 1-20 (default 300)")
    parser.add_argument("--held-out-clips", type=int, default=120, help="clips of actors 21-24 to compare on")
    parser.add_argument("--rebuild-tolerance", type=float, default=1e-4, help="max abs error of the rebuilt graph")
    parser.add_argument("--repeats", type=int, default=300, help="calls per timing round (0: no timing)")
    parser.add_argument("--report", type=Path, default=None, help="JSON report (default: <out>/...report.json)")
    args = parser.parse_args(argv)

    source = speech_embedding_dir() / EMBEDDING_MODEL_FILE
    float_content = source.read_bytes()
    float_model = TfliteEmbedding(float_content)
    have_data = (args.data / "Actor_01").is_dir()
    fixtures = sorted(FIXTURE_CLIPS.glob("Actor_*/*.flac"))
    if have_data:
        calibration_paths = fixtures + actor_clips(args.data, CALIBRATION_ACTORS, args.calibration_clips)
        held_out_paths = actor_clips(args.data, HELD_OUT_ACTORS, args.held_out_clips)
    else:
        calibration_paths = [p for p in fixtures if p.parent.name == "Actor_01"]
        held_out_paths = [p for p in fixtures if p.parent.name != "Actor_01"]
    calibration = clip_blocks(calibration_paths)
    held_out = clip_blocks(held_out_paths)
    print(
        f"calibration: {len(calibration_paths)} clips, {calibration.shape[0]} blocks; "
        f"held out: {len(held_out_paths)} clips, {held_out.shape[0]} blocks",
        file=sys.stderr,
    )

    ops, input_id, output_id = read_graph(source)
    function = build_float_function(ops, input_id, output_id)
    rebuilt = np.concatenate([np.asarray(function(calibration[i : i + 256])) for i in range(0, len(calibration), 256)])
    rebuild = compare(float_model.run(calibration), rebuilt.reshape(-1, EMBEDDING_DIM))
    print(f"rebuilt float graph against {source.name}: max abs error {rebuild['max_abs_error']:.2e}", file=sys.stderr)
    if not rebuild["max_abs_error"] <= args.rebuild_tolerance:
        print(f"error: the rebuilt graph differs from {source} by more than {args.rebuild_tolerance}", file=sys.stderr)
        return 1

    int8_content = convert_int8(function, calibration)
    int8_model = TfliteEmbedding(int8_content)
    reference = float_model.run(held_out)
    int8_held_out = compare(reference, int8_model.run(held_out))
    int8_calibration = compare(float_model.run(calibration), int8_model.run(calibration))

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / EMBEDDING_MODEL_INT8_FILE
    target.write_bytes(int8_content)
    import tensorflow as tf  # noqa: PLC0415

    report: dict[str, Any] = {
        "source": {"file": EMBEDDING_MODEL_FILE, "sha256": sha256_hex(float_content), "bytes": len(float_content)},
        "int8": {"file": target.name, "sha256": sha256_hex(int8_content), "bytes": len(int8_content)},
        "tensorflow": tf.__version__,
        "calibration": {
            "clips": [str(p.relative_to(p.parents[1])) for p in calibration_paths],
            "blocks": int(calibration.shape[0]),
            "stride_frames": BLOCK_STRIDE_FRAMES,
        },
        "rebuilt_float_vs_vendored": rebuild,
        "int8_vs_float_held_out": {"clips": len(held_out_paths), **int8_held_out},
        "int8_vs_float_calibration_set": int8_calibration,
    }
    if args.repeats > 0:
        report["pinned"] = pin_one_core()
        report["cost"] = measure_cost({"float": float_content, "int8": int8_content}, held_out, args.repeats)
    report_path = args.report or args.out / "embedding_model.int8.report.json"
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    summary = {k: v for k, v in report.items() if k != "calibration"}
    print(json.dumps(summary, indent=1))
    print(f"wrote {target} (sha256 {report['int8']['sha256']}) and {report_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
