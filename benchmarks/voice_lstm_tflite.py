"""The voice encoder's LSTM as TFLite's fused LSTM op against the NumPy loop (issue 16, seventh round).

    pip install tf-keras==2.21.0      # Keras 2, TensorFlow's version; not in the train extra
    python -m benchmarks.voice_lstm_tflite [--rounds 7] [--calls 40] [--per-layer] [--tf-interpreter]

A child process converts the encoder (``models/voice_encoder/voice_encoder.npz``) with
:func:`emostream.train.voice_encoder_export.fused_lstm_tflite` to a float32 graph (three
``UNIDIRECTIONAL_SEQUENCE_LSTM`` ops, no quantisation) so that this process never imports
TensorFlow, unless ``--tf-interpreter`` asks for TensorFlow's own interpreter as one more row (after the
others). Then, pinned to one core with one math thread:

* the graph's ops (fused, no WHILE loop, no unrolled steps), file size, the conversion's CPU and peak memory;
* the largest |difference| from the NumPy network (:class:`emostream.frontend.voice._Lstm`, the
  runtime's) on the mel blocks of the demo every 0.5 s, per part: the embedding and the time
  means of layers 1, 2 and 3; with ``reset_all_variables()`` before each invoke and without it
  (the op keeps its state between invokes);
* CPU (user + system, ``time.process_time``) per call in alternating rounds: the NumPy network as
  ``accurate`` runs it (embedding and the means of layers 2 and 3), the fused graph through
  ai-edge-litert with one thread (reset, set, invoke, get), and the invoke alone; the median per
  row and the median of each round's ratio to NumPy;
* ``--per-layer``: one LSTM layer of 256 over 40 and over 256 inputs (random weights), fused op
  against the same NumPy loop, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_one_core
from benchmarks.voice_rounds import LAYER_MEANS, alternating_rounds, demo_blocks, print_rounds
from emostream.apps.threads import bound_math_threads
from emostream.frontend.voice import MODEL_FILE, _Lstm, load_weights, voice_encoder_dir

_CONVERT = """
import sys
from pathlib import Path
from emostream.frontend.voice import MODEL_FILE, load_weights, voice_encoder_dir
from emostream.train.voice_encoder_export import fused_lstm_tflite
out = Path(sys.argv[1])
weights = load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes())
(out / "encoder.tflite").write_bytes(fused_lstm_tflite(weights))
if sys.argv[2] == "1":
    import numpy as np
    import tensorflow as tf
    import tf_keras
    for n_in in (40, 256):
        inputs = tf_keras.Input(shape=(160, n_in), batch_size=1)
        model = tf_keras.Model(inputs, tf_keras.layers.LSTM(256, return_sequences=True)(inputs))
        (out / f"layer{n_in}.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
"""


def _convert(folder: Path, per_layer: bool) -> float:
    """Convert in a child process (TensorFlow stays out of this one); its CPU seconds (peak RSS: ``ru_maxrss``)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    before = os.times()
    subprocess.run(
        [sys.executable, "-c", _CONVERT, str(folder), "1" if per_layer else "0"],
        check=True,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()
    return interp


def _runner(interp: Any, reset: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    src, dst = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def run(mel: np.ndarray) -> np.ndarray:
        if reset:
            interp.reset_all_variables()
        interp.set_tensor(src, mel[None])
        interp.invoke()
        out: np.ndarray = interp.get_tensor(dst)[0].copy()
        return out

    return run


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _rounds(rows: dict[str, Callable[[np.ndarray], object]], blocks: list[np.ndarray], rounds: int) -> None:
    print_rounds(alternating_rounds(rows, blocks, rounds), "ratio to the first row")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.voice_lstm_tflite", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--calls", type=int, default=40, help="blocks per row and round")
    parser.add_argument("--per-layer", action="store_true", help="also one LSTM layer over 40 and over 256 inputs")
    parser.add_argument("--tf-interpreter", action="store_true", help="also TensorFlow's own tf.lite interpreter")
    args = parser.parse_args(argv)
    cpu = pin_one_core()
    bound_math_threads()
    print(f"voice encoder LSTM: NumPy against TFLite's fused LSTM (core {cpu}, one math thread, CPU = user + sys)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        convert_s = _convert(folder, args.per_layer)
        content = (folder / "encoder.tflite").read_bytes()
        layers = {n: (folder / f"layer{n}.tflite").read_bytes() for n in (40, 256) if args.per_layer}
    net = _Lstm(load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes()))
    rss = _rss_kb()
    interp = _interpreter(content)
    rss_interp = _rss_kb() - rss
    ops = Counter(d["op_name"] for d in interp._get_ops_details())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"graph: {len(content)} bytes, converted in {convert_s:.1f} CPU s (peak RSS {peak_mb:.0f} MB); ops {dict(ops)}"
    )
    print(f"interpreter: +{rss_interp / 1024:.1f} MB RSS")
    if ops["UNIDIRECTIONAL_SEQUENCE_LSTM"] != 3 or ops["WHILE"] or ops["FULLY_CONNECTED"] > 1:
        print("the graph is not the fused one (expected 3 UNIDIRECTIONAL_SEQUENCE_LSTM, no WHILE)", file=sys.stderr)
        return 1

    blocks = demo_blocks()
    ref = np.stack([net(m[None], (1, 2, 3))[0] for m in blocks])
    for label, reset in (("reset before each invoke", True), ("no reset (state carried over)", False)):
        fresh = _runner(_interpreter(content), reset=reset)
        got = np.stack([fresh(m) for m in blocks])
        diff = np.abs(got - ref).reshape(len(blocks), 4, -1).max(axis=(0, 2))
        print(
            f"max |TFLite - NumPy| over {len(blocks)} demo blocks, {label}: embedding {diff[0]:.1e}, "
            f"layer means 1 / 2 / 3 {diff[1]:.1e} / {diff[2]:.1e} / {diff[3]:.1e}"
        )

    timed = blocks[: args.calls]
    print(f"\n{args.rounds} alternating rounds of {len(timed)} blocks")
    rows: dict[str, Callable[[np.ndarray], object]] = {
        "numpy _Lstm (layer means 2, 3)": lambda m: net(m[None], LAYER_MEANS),
        "litert fused (reset+invoke)": _runner(interp),
        "litert fused (invoke only)": _runner(interp, reset=False),
    }
    _rounds(rows, timed, args.rounds)

    if args.per_layer:
        rng = np.random.default_rng(0)
        for n_in, layer in layers.items():
            w_in = (0.1 * rng.standard_normal((n_in, 1024))).astype(np.float32)
            w_rec = (0.1 * rng.standard_normal((256, 1024))).astype(np.float32)
            xs = [rng.standard_normal((160, n_in)).astype(np.float32) for _ in range(len(timed))]
            print(f"\none LSTM layer of 256 over {n_in} inputs, 160 steps")
            _rounds(
                {
                    "numpy loop": lambda x, w_in=w_in, w_rec=w_rec: _numpy_layer(x, w_in, w_rec),
                    "litert fused": _runner(_interpreter(layer)),
                },
                xs,
                args.rounds,
            )

    if args.tf_interpreter:
        import tensorflow as tf

        tf_interp = tf.lite.Interpreter(model_content=content, num_threads=1)
        tf_interp.allocate_tensors()
        print(f"\nTensorFlow {tf.__version__}'s own interpreter, same graph")
        _rounds(
            {
                "numpy _Lstm (layer means 2, 3)": rows["numpy _Lstm (layer means 2, 3)"],
                "tf.lite fused (reset+invoke)": _runner(tf_interp),
            },
            timed,
            args.rounds,
        )
    return 0


def _numpy_layer(x: np.ndarray, w_in: np.ndarray, w_rec: np.ndarray) -> np.ndarray:
    """One layer as ``_Lstm`` runs it: the input product for all steps at once, then the recurrent loop."""
    inputs = x @ w_in
    h = np.zeros((1, 256), dtype=np.float32)
    c = np.zeros((1, 256), dtype=np.float32)
    g = np.empty((1, 1024), dtype=np.float32)
    out = np.empty((x.shape[0], 256), dtype=np.float32)
    sig, cand = g[:, :768], g[:, 768:]
    for t in range(x.shape[0]):
        np.dot(h, w_rec, out=g)
        g += inputs[t]
        sig *= 0.5
        np.tanh(sig, out=sig)
        sig *= 0.5
        sig += 0.5
        np.tanh(cand, out=cand)
        c *= g[:, 256:512]
        c += g[:, :256] * cand
        np.tanh(c, out=h)
        h *= g[:, 512:768]
        out[t] = h
    return out


if __name__ == "__main__":
    raise SystemExit(main())
