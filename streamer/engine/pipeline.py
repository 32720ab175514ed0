"""One channel's analysis: windows -> model -> smoother.

:class:`ChannelPipeline` takes float32 mono audio at the model's sample rate in chunks
of any size and returns one :class:`HopResult` per completed analysis window. It is pure
in the sense of the event stream: what it knows goes out in the hop results it returns,
and nothing outside sets its state. Statistics, alerts and outputs observe the results
(:mod:`emostream.engine.stats`, :mod:`emostream.engine.session`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import numpy.typing as npt

from emostream.engine.calibration import Calibrator
from emostream.engine.events import HopResult
from emostream.engine.labels import ALL, LabelGrouping, LabelsConfig
from emostream.engine.reading import ReadingConfig, arousal, input_rms_z, is_uncertain
from emostream.engine.smoothing import Smoother, SmoothingConfig
from emostream.frontend.features import FeatureConfig, FloatArray
from emostream.frontend.vad import VadConfig
from emostream.frontend.windowing import Window, WindowExtractor
from emostream.inference.model import EmotionModel

SILENCE_DB = -120.0


def level_dbfs(samples: npt.NDArray[np.float32]) -> float:
    """RMS level of float samples in dB relative to full scale (floored at -120 dB)."""
    if samples.size == 0:
        return SILENCE_DB
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENCE_DB, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DB


class ChannelPipeline:
    """Streaming emotion analysis of one channel.

    ``first_window_ms`` gives the first reading after that much audio (see
    :class:`emostream.frontend.windowing.WindowExtractor`; None = after a full window).
    ``feature_cfg`` defaults to the model's own; pass one with another ``window_hop_ms``
    (see :meth:`emostream.frontend.timing.WindowTiming.resolve`) to change the hop. With
    ``analysed=False`` the channel is gated and metered but never classified.
    ``latency_ms`` of a hop = its share of the chunk's feature/VAD time plus its own
    model and smoothing time. ``grouping`` reads the model's probabilities over the shown labels
    (:mod:`emostream.engine.labels`; None = every label of the model): the hops' scores and smoothing
    are over those; arousal and the uncertain flag are judged on the model's own probabilities.
    """

    def __init__(
        self,
        model: EmotionModel,
        vad_cfg: VadConfig,
        smoothing_cfg: SmoothingConfig,
        *,
        channel: int = 0,
        role: str = "speaker",
        analysed: bool = True,
        feature_cfg: FeatureConfig | None = None,
        first_window_ms: float | None = None,
        reading: ReadingConfig | None = None,
        calibrator: Calibrator | None = None,
        grouping: LabelGrouping | None = None,
    ) -> None:
        self.model = model
        self.grouping = grouping or LabelGrouping.resolve(LabelsConfig(show=ALL), model.labels)
        self.labels = self.grouping.labels
        self.feature_cfg = feature_cfg or model.metadata.feature_config
        self.vad_cfg = vad_cfg
        self.channel = channel
        self.role = role
        self.analysed = analysed
        self._extractor = WindowExtractor(
            self.feature_cfg, vad_cfg, first_window_ms=first_window_ms, compute_features=analysed, speech_only=True
        )
        self.timing = self._extractor.timing
        self.hop_s = self.timing.hop_s
        self._smoother = Smoother(self.labels, smoothing_cfg, self.hop_s)
        # each speech window's arousal (the model's own arousal output, else the weighted sum of its own
        # probabilities over every label it scores, whatever [labels] shows) smoothed exactly as the
        # probabilities are (same method, time constant and silence reset), as the two-class vector (1 - a, a)
        self._arousal_smoother = Smoother(("low", "high"), smoothing_cfg, self.hop_s)
        self.reading = reading or ReadingConfig()
        self._arousal_weights = self.reading.weights_for(model.labels)
        self.calibrator = calibrator
        self.reset()

    def reset(self) -> None:
        """Start a new stream: clear windows, smoothing and the level meter."""
        self._extractor.reset()
        self._smoother.reset()
        self._arousal_smoother.reset()
        if self.calibrator is not None:
            self.calibrator.reset()
        self._latest: npt.NDArray[np.float32] | None = None  # the latest chunk, for level_db
        self._uncertain = False  # the latest speech window's evidence was weak (held through pauses)

    @property
    def level_db(self) -> float:
        """RMS level of the latest chunk fed, dBFS (-120 before any): measured when asked, not per chunk."""
        return SILENCE_DB if self._latest is None else level_dbfs(self._latest)

    @property
    def samples_to_next_hop(self) -> int:
        """Samples (at the model's rate) still to be fed before the next hop comes out (at least 1)."""
        return self._extractor.samples_to_next_window

    def process(self, chunk: npt.ArrayLike) -> list[HopResult]:
        """Feed float32 mono samples at the model's rate; returns the hops they completed."""
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if samples.size:
            self._latest = samples.copy()  # the caller may reuse its buffer
        started = time.perf_counter()
        windows = self._extractor.process(samples)
        return self._hops(windows, time.perf_counter() - started)

    def flush(self) -> list[HopResult]:
        """End of stream: close a last (silence-padded) window over audio not yet covered."""
        started = time.perf_counter()
        windows = self._extractor.flush()
        return self._hops(windows, time.perf_counter() - started)

    def _hops(self, windows: list[Window], shared_s: float) -> list[HopResult]:
        share = shared_s / len(windows) if windows else 0.0
        return [self._hop(window, share) for window in windows]

    def _hop(self, window: Window, shared_s: float) -> HopResult:
        started = time.perf_counter()
        scores, window_arousal = None, None
        if self.analysed and window.is_speech:
            scores, window_arousal = self._classify(window.features)
        reading = self._smoother.process(scores, window.end_s) if self.analysed else (None, None, None)
        smoothed, emotion, confidence = reading
        arousal_now = None
        if self.analysed:
            pair = None if window_arousal is None else (1.0 - window_arousal, window_arousal)
            smoothed_pair = self._arousal_smoother.process(pair, window.end_s)[0]
            arousal_now = None if smoothed is None or smoothed_pair is None else float(smoothed_pair[1])
        uncertain = smoothed is not None and self._uncertain
        latency_ms = (shared_s + time.perf_counter() - started) * 1000.0
        result = HopResult(
            t_start=window.start_s,
            t_end=window.end_s,
            speech_ratio=window.speech_ratio,
            is_speech=window.is_speech,
            scores=None if scores is None else dict(zip(self.labels, scores.tolist(), strict=True)),
            smoothed=None if smoothed is None else dict(zip(self.labels, smoothed.tolist(), strict=True)),
            emotion=emotion,
            confidence=confidence,
            latency_ms=latency_ms,
            channel=self.channel,
            role=self.role,
            arousal=arousal_now,
            uncertain=uncertain,
        )
        return result

    def _classify(self, features: FloatArray) -> tuple[FloatArray, float]:
        """Probabilities over the shown labels of one speech window (its input normalised by the speaker
        calibration if there is one), and the window's arousal: the model's own arousal output, else the
        arousal of its probabilities over every label it scores."""
        x = self.model.select(features)
        if self.calibrator is None:
            mean, std = self.model.metadata.norm_mean, self.model.metadata.norm_std
        else:
            mean, std = self.calibrator.normalisation()
            self.calibrator.update(x)
        normalised = (x - mean) / std
        batch_probs, batch_arousal = self.model.predict_outputs(np.asarray(normalised[None], dtype=np.float32))
        probs = batch_probs[0]
        reading = self.reading
        population_z = None
        if reading.max_population_rms_z is not None:
            meta = self.model.metadata
            n = reading.population_columns or x.shape[-1]
            population_z = input_rms_z((x[..., :n] - meta.norm_mean[:n]) / meta.norm_std[:n])
        self._uncertain = is_uncertain(float(probs.max()), input_rms_z(normalised), reading, population_z)
        own = None if batch_arousal is None else float(batch_arousal[0])
        return self.grouping.apply(probs), arousal(probs, self._arousal_weights) if own is None else own
