"""Shared by the voice-encoder LSTM benchmarks: the demo's mel blocks and CPU time in alternating rounds.

CPU is user + system time of this process (``time.process_time``), per call, in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from benchmarks.common import demo_path
from emostream.audio.files import load_mono
from emostream.frontend.voice import BLOCK_SAMPLES, VoiceConfig, VoiceEncoder

LAYER_MEANS = (2, 3)  # the layer means accurate reads (v8 on)
FloatArray = npt.NDArray[np.float32]


def demo_blocks() -> list[FloatArray]:
    """The mel blocks (160, 40) float32 of the demo recording every 0.5 s, as the runtime computes them."""
    encoder = VoiceEncoder(VoiceConfig())
    audio = load_mono(demo_path(), 16000)
    return [encoder.mel(audio[s : s + BLOCK_SAMPLES]) for s in range(0, len(audio) - BLOCK_SAMPLES, 8000)]


def cpu_ms(fn: Callable[[FloatArray], object], blocks: list[FloatArray]) -> float:
    """CPU ms per call of ``fn`` over ``blocks``."""
    t = time.process_time()
    for m in blocks:
        fn(m)
    return (time.process_time() - t) / len(blocks) * 1e3


def alternating_rounds(
    rows: dict[str, Callable[[FloatArray], object]], blocks: list[FloatArray], rounds: int
) -> dict[str, list[float]]:
    """One warm-up call per row, then ``rounds`` rounds of every row in turn: CPU ms per call, per row and round."""
    for fn in rows.values():
        fn(blocks[0])
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            times[name].append(cpu_ms(fn, blocks))
    return times


def print_rounds(times: dict[str, list[float]], ratio_label: str, decimals: int = 2) -> None:
    """Per row: the median CPU ms per call, its min and max, and the median of each round's ratio to the first row."""
    base = times[next(iter(times))]
    width = max(len(name) for name in times)
    print(f"{'':>{width}} {'CPU ms/call (median)':>21} {'min':>7} {'max':>7} {ratio_label:>24}")
    for name, values in times.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(
            f"{name:>{width}} {statistics.median(values):>21.2f} {min(values):>7.2f} {max(values):>7.2f} "
            f"{ratio:>24.{decimals}f}"
        )
