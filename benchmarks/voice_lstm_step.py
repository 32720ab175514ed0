"""The voice encoder's NumPy LSTM step against the previous one (issue 16, eighth round).

    python -m benchmarks.voice_lstm_step [--rounds 9] [--calls 40]

Pinned to one core with one math thread, on the demo's mel blocks every 0.5 s (through
:meth:`emostream.frontend.voice.VoiceEncoder.mel`):

* the largest |difference| between the runtime's network (:class:`emostream.frontend.voice._Lstm`)
  and :class:`PreviousLstm`, a frozen copy of the loop it replaced (batch-major, thirteen ufunc calls
  and a copy per step), per part: the embedding and the time means of layers 1, 2 and 3; and
  whether they are equal bit for bit;
* CPU (user + system, ``time.process_time``) per call as ``accurate`` runs it (the embedding and
  the means of layers 2 and 3, one block) in alternating rounds, previous first; the median per
  row and the median of each round's ratio to the previous loop.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np

from benchmarks.common import pin_one_core
from benchmarks.voice_rounds import LAYER_MEANS, FloatArray, alternating_rounds, demo_blocks, print_rounds
from emostream.apps.threads import bound_math_threads
from emostream.frontend.voice import MODEL_FILE, _Lstm, load_weights, voice_encoder_dir


class PreviousLstm:
    """The seventh round's ``_Lstm`` (up to commit e65c39f), kept to measure against: same weights and outputs."""

    def __init__(self, weights: dict[str, FloatArray]) -> None:
        def gates(a: FloatArray) -> FloatArray:
            i, f, g, o = np.split(np.asarray(a, dtype=np.float32), 4, axis=0)
            return np.concatenate([i, f, o, g], axis=0)

        self.layers = [
            (
                np.ascontiguousarray(gates(weights[f"lstm.weight_ih_l{k}"]).T),
                np.ascontiguousarray(gates(weights[f"lstm.weight_hh_l{k}"]).T),
                gates(weights[f"lstm.bias_ih_l{k}"]) + gates(weights[f"lstm.bias_hh_l{k}"]),
            )
            for k in range(3)
        ]
        self.proj = np.ascontiguousarray(np.asarray(weights["linear.weight"], dtype=np.float32).T)
        self.proj_bias = np.asarray(weights["linear.bias"], dtype=np.float32)

    def __call__(self, mel: FloatArray, layer_means: tuple[int, ...] = ()) -> FloatArray:
        n, steps, _ = mel.shape
        means: list[FloatArray] = []
        h_size = 256
        x: FloatArray = mel
        h = np.zeros((n, h_size), dtype=np.float32)
        for layer, (w_in, w_rec, bias) in enumerate(self.layers, start=1):
            inputs = (x.reshape(n * steps, -1) @ w_in).reshape(n, steps, 4 * h_size)
            inputs += bias
            h = np.zeros((n, h_size), dtype=np.float32)
            c = np.zeros((n, h_size), dtype=np.float32)
            g = np.empty((n, 4 * h_size), dtype=np.float32)
            out = np.empty((n, steps, h_size), dtype=np.float32)
            sig = g[:, : 3 * h_size]
            cand = g[:, 3 * h_size :]
            for t in range(steps):
                np.dot(h, w_rec, out=g)
                g += inputs[:, t]
                sig *= 0.5  # sigmoid(x) = (tanh(x / 2) + 1) / 2
                np.tanh(sig, out=sig)
                sig *= 0.5
                sig += 0.5
                np.tanh(cand, out=cand)
                c *= g[:, h_size : 2 * h_size]
                c += g[:, :h_size] * cand
                np.tanh(c, out=h)
                h *= g[:, 2 * h_size : 3 * h_size]
                out[:, t] = h
            x = out
            if layer in layer_means:
                means.append(out.mean(axis=1, dtype=np.float32))
        emb = np.maximum(h @ self.proj + self.proj_bias, 0.0)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        result: FloatArray = (emb / np.where(norm > 0, norm, 1.0)).astype(np.float32)
        if means:
            result = np.concatenate([result, *means], axis=1)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.voice_lstm_step", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds")
    parser.add_argument("--calls", type=int, default=40, help="blocks per row and round")
    args = parser.parse_args(argv)
    cpu = pin_one_core()
    bound_math_threads()
    print(
        f"voice encoder LSTM: the NumPy step against the previous one (core {cpu}, one math thread, CPU = user + sys)"
    )
    weights = load_weights((voice_encoder_dir() / MODEL_FILE).read_bytes())
    previous, current = PreviousLstm(weights), _Lstm(weights)
    blocks = demo_blocks()
    ref = np.stack([previous(m[None], (1, 2, 3))[0] for m in blocks])
    got = np.stack([current(m[None], (1, 2, 3))[0] for m in blocks])
    diff = np.abs(got - ref).reshape(len(blocks), 4, -1).max(axis=(0, 2))
    print(
        f"max |current - previous| over {len(blocks)} demo blocks: embedding {diff[0]:.1e}, layer means 1 / 2 / 3 "
        f"{diff[1]:.1e} / {diff[2]:.1e} / {diff[3]:.1e}; equal bit for bit: {np.array_equal(got, ref)}"
    )

    rows: dict[str, Callable[[FloatArray], object]] = {
        "previous loop (means 2, 3)": lambda m: previous(m[None], LAYER_MEANS),
        "current _Lstm (means 2, 3)": lambda m: current(m[None], LAYER_MEANS),
    }
    timed = blocks[: args.calls]
    times = alternating_rounds(rows, timed, args.rounds)
    print(f"\n{args.rounds} alternating rounds of {len(timed)} blocks")
    print_rounds(times, "ratio to previous", decimals=3)
    base = times["previous loop (means 2, 3)"]
    ratio = statistics.median(b / v for v, b in zip(times["current _Lstm (means 2, 3)"], base, strict=True))
    print(f"the current step is {ratio:.2f}x cheaper per window (median of the rounds' ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
