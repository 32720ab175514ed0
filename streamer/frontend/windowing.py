"""Sliding analysis windows with speech gating: the stage shared by training and runtime.

:class:`WindowExtractor` takes float32 mono audio at the feature sample rate in chunks
of any size, runs the VAD and the per-frame front-end once per sample, and emits a
:class:`Window` every ``window_hop_ms`` once ``window_ms`` of audio is in. Each window
holds its speech ratio and its model input (before normalisation). Training calls it on
whole clips; the streaming engine on live chunks; both get the same windows.

With ``FeatureConfig.embedding`` the extractor also owns a
:class:`~emostream.frontend.embedding.SpeechEmbedder`, fed the very samples the VAD and
the featurizer get (lead-in included). With front-end version 2 its mel frames are made from the
featurizer's own spectra (STFT frame ``j`` windows samples ``[160 j + 56, 160 j + 456)``, exactly
what the embedding's mel frame ``j`` windows); with version 1 it computes them itself. A
speech window appends the pooled embeddings of its speech (the window's VAD flags gate them;
embeddings on the stride grid are computed once and shared by the overlapping windows); a
window that is not speech computes none and appends the pooled value of no embeddings
(zeros), so every window has the same shape.

With ``FeatureConfig.voice`` the extractor also owns a :class:`~emostream.frontend.voice.VoiceEncoder`:
a speech window appends the encoder's embedding of its last 1.615 s of samples (zeros and no
encoder run for a window that is not speech).

With ``FeatureConfig.whisper`` it also owns a :class:`~emostream.frontend.whisper.WhisperEncoder`: a speech
window appends the mean and std of the encoder's layers over its speech rows, from chunks on the stream's
global chunk grid, each encoded once (zeros and no chunk encoded for a window that is not speech).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emostream.frontend.embedding import (
    EMBEDDING_DIM,
    EMBEDDING_FRAMES,
    MEL_HOP_SAMPLES,
    MEL_SPAN_SAMPLES,
    SpeechEmbedder,
    pool_embeddings,
)
from emostream.frontend.features import FeatureConfig, FloatArray, FrameFeaturizer, model_input
from emostream.frontend.timing import WindowTiming
from emostream.frontend.vad import VadConfig, VadGate
from emostream.frontend.voice import BLOCK_SAMPLES as VOICE_BLOCK_SAMPLES
from emostream.frontend.voice import VoiceEncoder
from emostream.frontend.whisper import WhisperEncoder

_KEPT_WINDOWS = 4  # the stream buffers' initial room, in windows (at least 2: a window and what comes before it)


@dataclass(frozen=True)
class Window:
    """One analysis window.

    ``features`` is the model input before normalisation: shape (n_summary,) for the
    summary feature set or (frames_per_window, n_mfcc) for the frames set, float32.
    """

    index: int
    start_s: float
    end_s: float
    speech_ratio: float
    is_speech: bool
    features: FloatArray


class _Rows:
    """Rows addressed by a global index; old rows are dropped as the stream moves on.

    Rows below the ``keep_from`` of a call are dropped only when the buffer is full (then all of
    them at once, and the buffer doubles if that is not enough), so the kept rows are not moved
    on every call. ``first`` is the global index of ``data[0]``; views from :meth:`take` are valid
    until the next :meth:`extend` or :meth:`grow_to`.
    """

    def __init__(self, width: int | None, capacity: int, dtype: type) -> None:
        shape = (capacity,) if width is None else (capacity, width)
        self.data: npt.NDArray[np.generic] = np.zeros(shape, dtype=dtype)
        self.first = 0  # global index of data[0]
        self.count = 0

    @property
    def end(self) -> int:
        """Global index one past the newest row."""
        return self.first + self.count

    def _make_room(self, added: int, keep_from: int) -> int:
        """Room for ``added`` more rows (dropping rows below ``keep_from`` if full); returns the new count."""
        needed = self.count + added
        if needed <= len(self.data):
            return needed
        drop = min(max(0, keep_from - self.first), self.count)
        if drop:
            self.data[: self.count - drop] = self.data[drop : self.count]
            self.first += drop
            self.count -= drop
            needed -= drop
        if needed > len(self.data):
            grown = np.zeros((max(needed, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.count] = self.data[: self.count]
            self.data = grown
        return needed

    def extend(self, rows: npt.NDArray[np.generic], keep_from: int) -> None:
        """Append ``rows``; rows with a global index below ``keep_from`` may be dropped."""
        needed = self._make_room(len(rows), keep_from)
        self.data[self.count : needed] = rows
        self.count = needed

    def grow_to(self, stop: int, keep_from: int) -> None:
        """Append zero rows up to global index ``stop`` (exclusive); rows below ``keep_from`` may be dropped."""
        if stop > self.end:
            needed = self._make_room(stop - self.end, keep_from)
            self.data[self.count : needed] = 0
            self.count = needed

    def take(self, start: int, length: int) -> npt.NDArray[np.generic]:
        """Rows with global indices ``start .. start + length - 1`` (a view)."""
        offset = start - self.first
        return self.data[offset : offset + length]

    def reset(self) -> None:
        self.first = 0
        self.count = 0


class WindowExtractor:
    """VAD + per-frame features + sliding windows, incremental.

    ``process(chunk)`` returns the windows the chunk completed; ``flush()`` pads the
    stream with silence to close a last window over audio no window has covered yet.

    ``first_window_ms`` (default: the full window) lets a live stream give its first
    reading sooner: the stream is treated as if ``window_ms - first_window_ms`` of
    silence preceded it, so the first window closes after ``first_window_ms`` of audio
    and holds that audio plus silence (which the VAD masks out of the summary
    statistics). Window times are those of the real stream (a lead-in window starts at
    0); a window's speech ratio counts only VAD frames of real audio, but whether it is
    classified counts the assumed silence as no speech, so a first reading rests on as much
    speech as any other (``min_speech_ratio`` of the full window).

    With ``compute_features=False`` only the VAD runs (for channels that are metered but
    not classified); windows then carry an empty ``features`` array, and no speech
    embedder is created even when the config has an embedding.

    Work is done only where it counts, without changing any window's model input: the VAD
    runs on every sample, but a window computes only the STFT frames its input reads (its
    speech frames, unless it has too few of them and the summary falls back to every frame, or
    the frames feature set), the mel frames of the embeddings it asks for, and each frame once
    (overlapping windows share them). With ``speech_only=True`` (the runtime, which classifies
    speech windows only) a window that is not speech computes nothing and carries an empty
    ``features`` array; training keeps the default and gets every window's input.
    ``voice_encoder``: the encoder to run in place of one made from ``feature_cfg.voice``
    (the voice student's distillation records the blocks it is given).
    """

    def __init__(
        self,
        feature_cfg: FeatureConfig,
        vad_cfg: VadConfig,
        *,
        first_window_ms: float | None = None,
        compute_features: bool = True,
        speech_only: bool = False,
        voice_encoder: VoiceEncoder | None = None,
    ) -> None:
        self.timing = WindowTiming.of(feature_cfg, vad_cfg, first_window_ms)
        self.feature_cfg = feature_cfg
        self.vad_cfg = vad_cfg
        self._vad_frame = self.timing.vad_frame_samples
        self._lead_in = self.timing.lead_in_samples
        self._compute_features = compute_features
        self._speech_only = speech_only
        self._featurizer = FrameFeaturizer(feature_cfg)
        self._vad = VadGate(vad_cfg, feature_cfg.sample_rate_hz)
        # Four windows' worth: the rows of a window and its hop are kept, older ones dropped every few hops.
        capacity = _KEPT_WINDOWS * feature_cfg.frames_per_window
        self._frames = _Rows(self._featurizer.n_features, capacity, np.float32)  # rows, computed where _done
        self._done = _Rows(None, capacity, np.bool_)
        self._mel_done = _Rows(None, capacity, np.bool_)  # mel frames of the embedder computed
        self._audio = _Rows(None, _KEPT_WINDOWS * feature_cfg.window_samples, np.float32)  # samples, global index
        self._window_frames = np.arange(feature_cfg.frames_per_window)
        centres = self._window_frames * feature_cfg.hop_samples + feature_cfg.frame_offset_samples
        self._centre_flags = (centres + feature_cfg.frame_samples // 2) // self._vad_frame
        self._flags = _Rows(None, _KEPT_WINDOWS * feature_cfg.window_samples // self._vad_frame, np.bool_)
        self._embedder: SpeechEmbedder | None = None
        if compute_features and feature_cfg.embedding is not None:  # 16 kHz, 10 ms hop: FeatureConfig checked it
            self._embedder = SpeechEmbedder(feature_cfg.embedding)
        self._voice: VoiceEncoder | None = None
        self._voice_lookback = 0  # samples of audio and VAD flags kept before a window for a speech-only block
        if compute_features and feature_cfg.voice is not None:  # summary set at 16 kHz: FeatureConfig checked it
            self._voice = VoiceEncoder(feature_cfg.voice) if voice_encoder is None else voice_encoder
            self._voice.reset()  # a given encoder may have served another stream
            lookback_ms = feature_cfg.voice.speech_lookback_ms
            frames = math.ceil(lookback_ms * feature_cfg.sample_rate_hz / 1000.0 / self._vad_frame)
            self._voice_lookback = frames * self._vad_frame  # whole VAD frames
        self._whisper: WhisperEncoder | None = None
        if compute_features and feature_cfg.whisper is not None:  # whole chunks per window: FeatureConfig checked
            self._whisper = WhisperEncoder(feature_cfg.whisper)
        self._no_embedding = (
            None
            if feature_cfg.embedding is None
            else pool_embeddings(np.zeros((0, EMBEDDING_DIM)), feature_cfg.embedding.pooling)
        )
        self._samples_seen = 0
        self._next_index = 0
        self._frames_computed = 0
        self._frames_scanned = 0  # STFT frames up to here were computed at once if their centre is speech
        # Samples not yet run through the VAD and the front-end: they are analysed in one go
        # when the next window is due (both stages are chunk-size invariant, so the windows are
        # the same), which saves their per-call overhead on small chunks.
        self._pending = np.zeros(feature_cfg.window_samples, dtype=np.float32)
        self._pending_len = 0
        self._feed_lead_in()

    def reset(self) -> None:
        """Start a new stream."""
        self._featurizer.reset()
        self._vad.reset()
        if self._embedder is not None:
            self._embedder.reset()
        if self._voice is not None:
            self._voice.reset()
        if self._whisper is not None:
            self._whisper.reset()
        self._frames.reset()
        self._done.reset()
        self._mel_done.reset()
        self._audio.reset()
        self._flags.reset()
        self._samples_seen = 0
        self._next_index = 0
        self._frames_scanned = 0
        self._pending_len = 0
        self._feed_lead_in()

    def _feed_lead_in(self) -> None:
        if self._lead_in:
            self.process(np.zeros(self._lead_in, dtype=np.float32))

    @property
    def embedder(self) -> SpeechEmbedder | None:
        """The speech embedder of a fused config (None without an embedding or with ``compute_features=False``)."""
        return self._embedder

    @property
    def embeddings_computed(self) -> int:
        """Speech embeddings computed since construction (0 without an embedder)."""
        return 0 if self._embedder is None else self._embedder.embeddings_computed

    @property
    def voice_embeddings_computed(self) -> int:
        """Voice-encoder embeddings computed since construction (0 without a voice encoder)."""
        return 0 if self._voice is None else self._voice.embeddings_computed

    @property
    def whisper_chunks_encoded(self) -> int:
        """Whisper chunks encoded since construction (0 without a whisper encoder)."""
        return 0 if self._whisper is None else self._whisper.chunks_encoded

    @property
    def frames_computed(self) -> int:
        """STFT frames whose feature rows were computed since construction (for cost accounting)."""
        return self._frames_computed

    @property
    def samples_to_next_window(self) -> int:
        """Samples still to be fed before the next window closes (at least 1)."""
        cfg = self.feature_cfg
        return max(1, self._next_index * cfg.window_hop_samples + cfg.window_samples - self._samples_seen)

    @property
    def samples_seen(self) -> int:
        """Samples of the real stream fed since the last reset (the lead-in excluded)."""
        return self._samples_seen - self._lead_in

    def process(self, chunk: npt.ArrayLike) -> list[Window]:
        """Feed float32 mono samples at the feature rate; return completed windows."""
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._samples_seen += samples.size
        cfg = self.feature_cfg
        next_end = self._next_index * cfg.window_hop_samples + cfg.window_samples
        if self._samples_seen < next_end:
            self._hold(samples)
            return []
        if self._pending_len:
            self._hold(samples)
            samples = self._pending[: self._pending_len]
        self._pending_len = 0
        next_start = self._next_index * cfg.window_hop_samples
        keep_from = next_start - self._voice_lookback  # a speech-only voice block looks back before the window
        if self._compute_features:  # frames are computed when a window asks for them
            self._audio.extend(samples, keep_from)
        self._flags.extend(self._vad.process(samples), keep_from // self._vad_frame)
        if self._compute_features:
            self._compute_speech_frames(next_start // cfg.hop_samples)
        return self._emit_ready()

    def _compute_speech_frames(self, keep_from: int) -> None:
        """Compute the new STFT frames whose centre the VAD calls speech, as their audio comes in.

        Those are the frames speech windows read; computing them hop by hop, rather than when a
        window first needs them (the first speech window after a pause needs nearly all of its
        frames), keeps every hop's cost alike.
        """
        cfg = self.feature_cfg
        centre = cfg.frame_offset_samples + cfg.frame_samples // 2
        by_audio = (self._audio.end - cfg.frame_offset_samples - cfg.frame_samples) // cfg.hop_samples + 1
        by_flags = -(-(self._flags.end * self._vad_frame - centre) // cfg.hop_samples)
        stop = min(by_audio, by_flags)
        if stop <= self._frames_scanned:
            return
        frames = np.arange(max(self._frames_scanned, keep_from), stop)
        self._frames_scanned = stop
        speech = self._flags.data[(frames * cfg.hop_samples + centre) // self._vad_frame - self._flags.first]
        self._compute_frames(frames[speech.astype(bool)], keep_from)

    def _hold(self, samples: FloatArray) -> None:
        """Append ``samples`` to the not-yet-analysed buffer (grown by doubling when full)."""
        needed = self._pending_len + samples.size
        if needed > self._pending.size:
            grown = np.zeros(max(needed, 2 * self._pending.size), dtype=np.float32)
            grown[: self._pending_len] = self._pending[: self._pending_len]
            self._pending = grown
        self._pending[self._pending_len : needed] = samples
        self._pending_len = needed

    def flush(self) -> list[Window]:
        """Close the stream: pad with silence so audio after the last window gets one window."""
        cfg = self.feature_cfg
        covered = 0 if self._next_index == 0 else (self._next_index - 1) * cfg.window_hop_samples + cfg.window_samples
        if self._samples_seen <= max(covered, self._lead_in):
            return []
        next_end = self._next_index * cfg.window_hop_samples + cfg.window_samples
        return self.process(np.zeros(next_end - self._samples_seen, dtype=np.float32))

    def _emit_ready(self) -> list[Window]:
        cfg = self.feature_cfg
        vad_per_window = cfg.window_samples // self._vad_frame
        windows: list[Window] = []
        while True:
            start = self._next_index * cfg.window_hop_samples
            first_frame = start // cfg.hop_samples
            first_flag = start // self._vad_frame
            if self._flags.end < first_flag + vad_per_window:  # the audio is in once its VAD frames are
                return windows
            windows.append(self._make_window(start, first_frame, first_flag, vad_per_window))
            self._next_index += 1

    def _make_window(self, start: int, first_frame: int, first_flag: int, vad_per_window: int) -> Window:
        flags = self._flags.take(first_flag, vad_per_window).astype(bool)
        real_flags = flags[max(0, self._lead_in - start) // self._vad_frame :]
        heard = int(np.count_nonzero(real_flags))
        # np.mean of the flags: their float64 sum (a whole number) over the count, the same correctly rounded quotient
        ratio = heard / real_flags.size if real_flags.size else math.nan
        # Classified only with as much speech as any full window needs: the silence assumed before the
        # stream counts as no speech. Counted over the real audio alone, a first window with 0.3 s of
        # speech was classified, and such readings lean to one emotion (issue 19, item 3).
        is_speech = heard / flags.size >= self.vad_cfg.min_speech_ratio
        start_s, end_s = self.timing.window_times_s(self._next_index)
        wanted = self._compute_features and (is_speech or not self._speech_only)
        return Window(
            index=self._next_index,
            start_s=start_s,
            end_s=end_s,
            speech_ratio=ratio,
            is_speech=is_speech,
            features=self._window_features(start, first_frame, flags, is_speech) if wanted else _NO_FEATURES,
        )

    def _window_features(
        self, start: int, first_frame: int, flags: npt.NDArray[np.bool_], is_speech: bool
    ) -> FloatArray:
        cfg = self.feature_cfg
        mask = flags[self._centre_flags]
        self._compute_frames(first_frame + self._window_frames[self._frames_read(mask)], first_frame)
        frames = self._frames.take(first_frame, cfg.frames_per_window)
        return model_input(
            np.asarray(frames, dtype=np.float32),
            mask,
            cfg,
            pooled_embedding=self._pooled(start, flags, is_speech),
            voice_embedding=self._voice_embedding(start, is_speech),
            whisper_part=self._whisper_part(start, flags, is_speech),
        )

    def _whisper_part(self, start: int, flags: npt.NDArray[np.bool_], is_speech: bool) -> FloatArray | None:
        """The whisper encoder's statistics of the window starting at global sample ``start`` (None without one).

        Not speech: zeros, and no chunk is encoded.
        """
        if self._whisper is None:
            return None
        if not is_speech:
            return np.zeros(self._whisper.config.dim, dtype=np.float32)
        window = self._audio.take(start, self.feature_cfg.window_samples)
        return self._whisper.process(window, start_sample=start, flags=flags, vad_frame_samples=self._vad_frame)

    def _voice_embedding(self, start: int, is_speech: bool) -> FloatArray | None:
        """The voice encoder's embedding of the window's last 1.615 s (None without a voice encoder).

        Not speech: zeros, and the encoder is not run.
        """
        if self._voice is None:
            return None
        if not is_speech:
            return np.zeros(self._voice.config.dim, dtype=np.float32)
        end = start + self.feature_cfg.window_samples
        if self._voice_lookback:
            return self._voice.process(self._speech_block(end))
        block: FloatArray = np.asarray(self._audio.take(end - VOICE_BLOCK_SAMPLES, VOICE_BLOCK_SAMPLES), np.float32)
        return self._voice.process(block, end_sample=end)

    def _speech_block(self, end: int) -> FloatArray:
        """The last :data:`VOICE_BLOCK_SAMPLES` samples of VAD speech before global sample ``end`` (a multiple of
        the VAD frame), within the voice config's lookback, joined; zeros in front when less speech was heard.

        float32 (VOICE_BLOCK_SAMPLES,). The lead-in's silence and audio before the stream never count as speech.
        """
        frame = self._vad_frame
        first = max(end - self._voice_lookback, self._audio.first, self._flags.first * frame, self._lead_in)
        first_flag = -(-first // frame)
        n = end // frame - first_flag
        block = np.zeros(VOICE_BLOCK_SAMPLES, dtype=np.float32)
        if n <= 0:
            return block
        flags = self._flags.take(first_flag, n).astype(bool)
        frames = self._audio.take(first_flag * frame, n * frame).reshape(n, frame)
        speech = frames[flags].reshape(-1)[-VOICE_BLOCK_SAMPLES:]
        block[VOICE_BLOCK_SAMPLES - speech.size :] = speech
        return block

    def _frames_read(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """The window's frames its model input reads: the speech frames, or all where it falls back to all.

        :func:`model_input` takes the summary over the speech frames when there are at least two (the
        deltas over pairs of consecutive speech frames when there are at least two pairs), else over
        every frame; the frames feature set reads every frame.
        """
        cfg = self.feature_cfg
        if cfg.feature_set != "summary" or int(np.count_nonzero(mask)) < 2:
            return np.ones_like(mask)
        if cfg.deltas and int(np.count_nonzero(mask[1:] & mask[:-1])) < 2:
            return np.ones_like(mask)
        return mask

    def _compute_frames(self, frames: npt.NDArray[np.intp], keep_from: int) -> None:
        """Compute the feature rows of the global STFT frames ``frames`` not computed yet (ascending)."""
        stop = keep_from + self.feature_cfg.frames_per_window
        if frames.size:
            stop = max(stop, int(frames[-1]) + 1)
        self._frames.grow_to(stop, keep_from)
        self._done.grow_to(stop, keep_from)
        done = self._done.data[frames - self._done.first]
        todo = frames[~done.astype(bool)]
        if todo.size == 0:
            return
        samples = self._featurizer.frames_at(self._held_audio(), self._audio.first, todo)
        rows, power = self._featurizer.compute(samples)
        self._frames_computed += todo.size
        self._frames.data[todo - self._frames.first] = rows
        self._done.data[todo - self._done.first] = True
        if self._embedder is not None and self.feature_cfg.shared_mel:  # the same spectra: mel frame j = STFT frame j
            self._set_mel(todo, power, keep_from)

    def _held_audio(self) -> FloatArray:
        held: FloatArray = self._audio.data[: self._audio.count].astype(np.float32, copy=False)
        return held

    def _set_mel(self, frames: npt.NDArray[np.intp], power: FloatArray, keep_from: int) -> None:
        embedder = self._embedder
        if embedder is None:
            return
        stop = keep_from + self.feature_cfg.window_samples // MEL_HOP_SAMPLES
        if frames.size:
            stop = max(stop, int(frames[-1]) + 1)
        embedder.reserve(stop, keep_from_frame=keep_from)
        self._mel_done.grow_to(stop, keep_from)
        fresh = frames[~self._mel_done.data[frames - self._mel_done.first].astype(bool)]
        if fresh.size:
            embedder.set_mel_from_power(fresh, power[np.searchsorted(frames, fresh)])
            self._mel_done.data[fresh - self._mel_done.first] = True

    def _compute_mel(self, ends: npt.NDArray[np.int64], first: int) -> None:
        """Compute the mel frames that the embeddings ending at ``ends`` read and that are not computed yet."""
        embedder = self._embedder
        if embedder is None or ends.size == 0:
            return
        stop = first + self.feature_cfg.window_samples // MEL_HOP_SAMPLES
        embedder.reserve(stop, keep_from_frame=first)
        self._mel_done.grow_to(stop, first)
        read = np.zeros(stop - first, dtype=bool)
        for t in ends.tolist():
            read[t - EMBEDDING_FRAMES - first : t - first] = True
        frames = first + np.flatnonzero(read & ~self._mel_done.take(first, stop - first).astype(bool))
        if frames.size == 0:
            return
        audio = self._held_audio()
        if self.feature_cfg.shared_mel:
            power = self._featurizer.power(self._featurizer.frames_at(audio, self._audio.first, frames))
            embedder.set_mel_from_power(frames, power)
        else:  # version 1: mel frame j reads samples [160 j, 160 j + 512)
            offsets = frames * MEL_HOP_SAMPLES - self._audio.first
            embedder.set_mel_from_audio(frames, audio[offsets[:, None] + np.arange(MEL_SPAN_SAMPLES)])
        self._mel_done.data[frames - self._mel_done.first] = True

    def _pooled(self, start: int, flags: npt.NDArray[np.bool_], is_speech: bool) -> FloatArray | None:
        """Pooled speech embeddings of the window starting at sample ``start`` (None without an embedding).

        Not speech: the pooled value of no embeddings, and the embedding model is not run.
        """
        if self._embedder is None or self._no_embedding is None:
            return None
        if not is_speech:
            return self._no_embedding
        first = start // MEL_HOP_SAMPLES
        stop = first + self.feature_cfg.window_samples // MEL_HOP_SAMPLES
        ends = self._embedder.speech_ends(first, stop, flags)
        self._compute_mel(self._embedder.uncached(ends), first)
        return pool_embeddings(self._embedder.embeddings(ends), self._embedder.config.pooling)


_NO_FEATURES: FloatArray = np.zeros(0, dtype=np.float32)


def extract_windows(signal: npt.ArrayLike, feature_cfg: FeatureConfig, vad_cfg: VadConfig) -> list[Window]:
    """All windows of a whole signal, the last one padded with silence (as at the end of a stream)."""
    extractor = WindowExtractor(feature_cfg, vad_cfg)
    return extractor.process(signal) + extractor.flush()
