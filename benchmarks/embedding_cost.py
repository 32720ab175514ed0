"""Cost of the speech-embedding front-end (issue 8), pinned to one core.

    python -m benchmarks.embedding_cost

Prints CPU time (user + system, ``time.process_time``) and wall time per log-mel block and per
embedding call (batch 1, 4, 8), then the CPU real-time factor of mel + embeddings for strides
of 8, 16, 25 and 50 mel frames with 100 % and 60 % speech, against the budget left by the
rest of the pipeline (whole pipeline CPU RTF <= 0.005, the rest costs about 0.002).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from emostream.frontend.embedding import (
    EMBEDDING_FRAMES,
    MEL_BINS,
    EmbeddingConfig,
    SpeechEmbedder,
    speech_embedding_dir,
)

PIPELINE_BUDGET_RTF = 0.005
REST_OF_PIPELINE_RTF = 0.002
WINDOW_HOP_FRAMES = 50  # windows every 0.5 s reuse the grid embeddings of earlier windows
BATCHES = (1, 4, 8)
STRIDES = (8, 16, 25, 50)


def _pin() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        return "not pinned"
    return f"pinned to core {min(os.sched_getaffinity(0))}"


def _cost(func: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Mean CPU and wall milliseconds per call (after one warm-up call)."""
    func()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        func()
    return (time.process_time() - cpu0) / repeats * 1e3, (time.perf_counter() - wall0) / repeats * 1e3


def _tflite_mel_cost(frames: int, repeats: int) -> tuple[float, float] | None:
    """The melspectrogram.tflite graph itself (XNNPACK off: it cannot resize with it), for comparison."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None
    interp = Interpreter(
        model_path=str(speech_embedding_dir() / "melspectrogram.tflite"),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    n = 160 * frames + 352
    interp.resize_tensor_input(0, [1, n], strict=True)
    interp.allocate_tensors()
    x = (np.random.default_rng(0).standard_normal((1, n)) * 3000).astype(np.float32)

    def run() -> None:
        interp.set_tensor(0, x)
        interp.invoke()

    return _cost(run, repeats)


def main() -> None:
    print(f"speech-embedding cost ({_pin()}; CPU = user + system)")
    rng = np.random.default_rng(0)
    embedder = SpeechEmbedder(EmbeddingConfig(max_batch=max(BATCHES)))
    audio = (rng.standard_normal(16000 * 4) * 0.1).astype(np.float32)
    embedder.process(audio)

    print("\nlog-mel (numpy, constants from melspectrogram.tflite)")
    print(f"{'block':>10} {'frames':>7} {'CPU ms':>8} {'wall ms':>8} {'CPU ms per s audio':>19}")
    mel_cpu_per_s = 0.0
    for block_ms in (50, 500):
        block = audio[: 16 * block_ms]
        cpu, wall = _cost(lambda block=block: embedder.process(block), 400 if block_ms == 50 else 60)
        per_s = cpu * 1000 / block_ms
        if block_ms == 500:  # the window extractor feeds the front-end once per 0.5 s window hop
            mel_cpu_per_s = per_s
        print(f"{block_ms:>8}ms {block_ms // 10:>7} {cpu:>8.3f} {wall:>8.3f} {per_s:>19.3f}")
    ref = _tflite_mel_cost(50, 60)
    if ref is not None:
        print(f"{'(tflite graph)':>10} {50:>7} {ref[0]:>8.3f} {ref[1]:>8.3f} {ref[0] * 2:>19.3f}")

    print("\nembedding model (float32, XNNPACK)")
    print(f"{'batch':>6} {'CPU ms':>8} {'wall ms':>8} {'CPU ms/emb':>11} {'wall ms/emb':>12}")
    per_emb: dict[int, float] = {}
    blocks = rng.standard_normal((max(BATCHES), EMBEDDING_FRAMES, MEL_BINS, 1)).astype(np.float32)
    for batch in BATCHES:
        x = blocks[:batch]
        cpu, wall = _cost(lambda x=x: embedder.embed_mel(x), 40)
        per_emb[batch] = cpu / batch
        print(f"{batch:>6} {cpu:>8.3f} {wall:>8.3f} {cpu / batch:>11.3f} {wall / batch:>12.3f}")
    print("int8 embedding model: not made (see models/speech_embedding/README.md); float only")

    budget = PIPELINE_BUDGET_RTF - REST_OF_PIPELINE_RTF
    print(
        f"\nCPU RTF of mel + embeddings (budget for this stage {budget:.4f} = {PIPELINE_BUDGET_RTF} - "
        f"{REST_OF_PIPELINE_RTF} for the rest); batch = new grid embeddings per 0.5 s hop, at most 8"
    )
    print(f"{'stride':>6} {'speech':>7} {'emb/s':>6} {'batch':>6} {'CPU RTF':>8} {'pipeline':>9}  verdict")
    for stride in STRIDES:
        for speech in (1.0, 0.6):
            per_s = 100 / stride * speech
            per_hop = max(1, round(WINDOW_HOP_FRAMES / stride * speech))
            batch = max(b for b in BATCHES if b <= min(per_hop, max(BATCHES)))
            rtf = (mel_cpu_per_s + per_s * per_emb[batch]) / 1000
            total = rtf + REST_OF_PIPELINE_RTF
            verdict = "meets" if total <= PIPELINE_BUDGET_RTF else "misses"
            print(f"{stride:>6} {speech:>7.0%} {per_s:>6.2f} {batch:>6} {rtf:>8.4f} {total:>9.4f}  {verdict}")


if __name__ == "__main__":
    main()
