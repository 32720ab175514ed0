"""Silero VAD as the speech detector of the gate (opt-in: ``[vad] engine = "silero"``).

Silero's small recurrent network (v6, ONNX, vendored in ``models/silero_vad/``, MIT) tells
speech from steady or switching background noise far better than webrtcvad (on the demo's
pauses of -55 dBFS white noise it hears speech in under 2 % of the pause against most of it),
at about 0.16 ms of CPU per 32 ms of audio: 2.5 times the fast model's whole budget, so it
is an option, not the default (docs/streaming_eval.md has the measurements).

The network takes 512-sample chunks at 16 kHz, each with the previous 64 samples as
context, and carries a (2, 1, 128) state. :class:`SileroDetector` runs it on the fixed chunk
grid of the stream (chunk ``k`` = samples ``[512 k, 512 k + 512)``) whatever the block sizes,
and answers per VAD frame with the probability of the last chunk that ended at or before
the frame's end (causal; none yet = not speech). Stream == batch by construction.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError

SAMPLE_RATE_HZ = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SHAPE = (2, 1, 128)
MODEL_FILE = "silero_vad/silero_vad.onnx"
MODEL_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
INSTALL_HINT = "install it with `pip install 'emostream[silero]'` (onnxruntime), or use engine = \"webrtc\""


@cache
def _session() -> Any:
    """The ONNX Runtime session of the vendored model (one per process, single-threaded; checked by sha256)."""
    try:
        import onnxruntime  # noqa: PLC0415 - optional dependency, loaded only for engine = "silero"
    except ImportError as exc:
        raise ConfigError(f'[vad] engine = "silero" needs onnxruntime, which is not installed; {INSTALL_HINT}') from exc
    model = resources.files("emostream.models").joinpath(MODEL_FILE)
    try:
        data = model.read_bytes()
    except OSError as exc:
        raise ModelError(f"the Silero VAD model {MODEL_FILE} cannot be read ({exc}); reinstall emostream") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelError(
            f"the Silero VAD model {MODEL_FILE} has sha256 {digest[:12]}..., expected {MODEL_SHA256[:12]}...; "
            "the file is damaged: reinstall emostream"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: nothing over the dashboard
    return onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def check_available(sample_rate_hz: int) -> None:
    """ConfigError unless Silero can run here at ``sample_rate_hz`` (onnxruntime installed, 16 kHz)."""
    if sample_rate_hz != SAMPLE_RATE_HZ:
        raise ConfigError(
            f'[vad] engine = "silero" runs at {SAMPLE_RATE_HZ} Hz; this model analyses {sample_rate_hz} Hz: '
            'use engine = "webrtc" with it'
        )
    _session()


class SileroDetector:
    """Speech probabilities of a 16 kHz stream on Silero's fixed chunk grid; see the module docstring.

    ``frame_probabilities(samples, first_frame, n_frames, frame_samples)`` feeds float32 mono
    samples and returns float32 (n_frames,): for each VAD frame ``first_frame + i`` (frames of
    ``frame_samples``), the speech probability of the last chunk ending at or before its end.
    """

    def __init__(self) -> None:
        self._session = _session()
        self._rate = np.array(SAMPLE_RATE_HZ, dtype=np.int64)
        self._input = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the context, the recurrent state and the chunk grid: the next sample starts chunk 0."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._input[:] = 0.0
        self._filled = 0  # samples of the current chunk received
        self._chunks = 0  # chunks run since the reset
        self._last_probability = 0.0  # of chunk self._chunks - 1

    def _run_chunk(self) -> float:
        out, self._state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._rate})
        self._input[0, :CONTEXT_SAMPLES] = self._input[0, -CONTEXT_SAMPLES:]
        self._chunks += 1
        self._last_probability = float(out[0, 0])
        return self._last_probability

    def process(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Feed samples; return the probabilities of the chunks they complete, float32 (n_chunks,)."""
        probabilities: list[float] = []
        position = 0
        while position < samples.size:
            take = min(CHUNK_SAMPLES - self._filled, samples.size - position)
            start = CONTEXT_SAMPLES + self._filled
            self._input[0, start : start + take] = samples[position : position + take]
            self._filled += take
            position += take
            if self._filled == CHUNK_SAMPLES:
                probabilities.append(self._run_chunk())
                self._filled = 0
        return np.asarray(probabilities, dtype=np.float32)

    def frame_probabilities(
        self, samples: npt.NDArray[np.float32], first_frame: int, n_frames: int, frame_samples: int
    ) -> npt.NDArray[np.float32]:
        """Feed ``samples`` (which complete frames ``first_frame ..``); per-frame probabilities, float32 (n_frames,)."""
        chunks_before = self._chunks
        previous = self._last_probability
        new = self.process(samples)
        ends = (np.arange(first_frame, first_frame + n_frames) + 1) * frame_samples
        last_chunk = ends // CHUNK_SAMPLES - 1  # the last chunk ending at or before each frame's end
        known = np.concatenate([[previous], new]).astype(np.float32)
        index = last_chunk - (chunks_before - 1)  # into known: 0 = the chunk before this call
        out = np.where(last_chunk < 0, 0.0, known[np.clip(index, 0, known.size - 1)])
        return out.astype(np.float32)
