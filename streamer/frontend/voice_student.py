"""The voice encoder's distilled student: a TFLite CNN in the LSTM's place.

The student (trained by ``python -m emostream.train.voice_student``) reads the same (160, 40)
mel power block as the LSTM of :mod:`emostream.frontend.voice`, as natural-log mel
``log(mel + 1e-6)``, and returns a 256-dim vector trained to match the LSTM's embedding
(cosine about 0.9 on held-out speakers); it is L2-normalised here like the LSTM's. It costs
about 0.3 ms per block with float16 weights (0.1 ms as int8, which rounds its input and
activations) against the LSTM's 15-20 ms. Either precision runs here: the file's tensors say.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from emostream.inference.tflite import TfliteRunner

FloatArray = npt.NDArray[np.float32]

EMBEDDING_DIM = 256
"""The embedding's values, first in a student's output."""
LOG_FLOOR = 1e-6
"""Added to the mel power before the natural log (digital silence reads log(1e-6) = -13.8)."""
LEVEL_FLOOR = 1e-5
"""``levelled_log_mel``: added to the mel power over the block's mean (a floor 50 dB below it)."""
STUDENT_INPUTS: tuple[str, ...] = ("log_mel", "levelled_log_mel")
"""What a student reads: ``log_mel`` = log(mel + 1e-6) (v6's student); ``levelled_log_mel`` =
log(mel / mean(mel) + 1e-5) per block: unchanged by a gain, and frames more than 50 dB below the
block's mean all read the floor."""


def student_input(mel: npt.ArrayLike, kind: str = "log_mel") -> FloatArray:
    """The student's input from mel power blocks (..., 160, 40): float32, same shape (:data:`STUDENT_INPUTS`)."""
    x = np.asarray(mel, dtype=np.float32)
    if kind == "log_mel":
        out: FloatArray = np.log(x + np.float32(LOG_FLOOR))
        return out
    if kind != "levelled_log_mel":
        raise ValueError(f"student input {kind!r}; expected one of {', '.join(STUDENT_INPUTS)}")
    level = x.mean(axis=(-2, -1), keepdims=True, dtype=np.float64).astype(np.float32)
    levelled: FloatArray = np.log(x / np.where(level > 0, level, np.float32(1.0)) + np.float32(LEVEL_FLOOR))
    return levelled


def unit_rows(x: FloatArray) -> FloatArray:
    """Each row scaled to L2 norm 1 (rows of zeros stay zero), float32 of ``x``'s shape (float32, (..., n)).

    The norm is ``np.linalg.norm(x, axis=-1, keepdims=True)``'s own arithmetic for real input (the squares
    summed with ``add.reduce``, then the root), without its Python layers; a new array is returned.
    """
    norm = np.add.reduce(np.multiply(x, x), axis=-1, keepdims=True)
    np.sqrt(norm, out=norm)
    norm[~(norm > 0)] = 1.0  # np.where(norm > 0, norm, 1.0)
    out: FloatArray = np.divide(x, norm).astype(np.float32, copy=False)
    return out


class StudentRunner:
    """One student interpreter: ``process(mel)`` (160, 40) mel power -> (:attr:`dim`,) float32: the embedding
    (256, L2 norm 1, or 0), then any layer means.

    Not thread-safe (one TFLite interpreter): each :class:`~emostream.frontend.voice.VoiceEncoder`
    makes its own from the shared, checked file bytes.
    """

    def __init__(self, content: bytes, *, source: str, input_kind: str = "log_mel") -> None:
        self._runner = TfliteRunner(content, source=f"voice student {source}")
        self.input_kind = input_kind
        self.dim = int(np.prod(self._runner.output_shape))
        """Values per block: 256, plus 256 per layer mean the student reproduces."""

    def run(self, mel: npt.ArrayLike) -> FloatArray:
        """Outputs of a batch of mel power blocks (n, 160, 40) -> (n, :attr:`dim`) float32 (:meth:`run_inputs`)."""
        return self.run_inputs(student_input(mel, self.input_kind))

    def run_inputs(self, inputs: npt.ArrayLike) -> FloatArray:
        """Outputs of a batch of student inputs (:func:`student_input` of the runner's kind, (n, 160, 40))
        -> (n, :attr:`dim`) float32, the first 256 of each row L2-normalised."""
        out = self._runner.run(np.asarray(inputs, dtype=np.float32)).reshape(-1, self.dim)
        out[:, :EMBEDDING_DIM] = unit_rows(out[:, :EMBEDDING_DIM])
        return out

    def process(self, mel: FloatArray) -> FloatArray:
        """The outputs of one (160, 40) mel power block: (:attr:`dim`,) float32."""
        out: FloatArray = self.run(mel[None])[0]
        return out
