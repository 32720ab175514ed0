"""Pauses read as emotion (issue 19, item 2): noise between utterances, per speech gate, and what each gate costs.

The 16 fixture clips (``tests/fixtures/ravdess``, peak-normalised to -1 dBFS, their own quiet
lead-in and tail kept) are joined with 3 s of pink noise at -40, -50 and -60 dBFS after each
one: noise that comes and goes with the pauses, which webrtcvad alone takes for speech (its
noise model has adapted to the quiet tails). Per level and gate, through ``ChannelPipeline``
with the first model (``--model``, default the shipped ``fast``):

* pause readings: of the 16 pauses, those whose middle window (the one lying inside the
  pause nearest to its centre) was classified (target 0);
* speech readings: hops classified whose window overlaps an utterance (the gate must keep them);
* the gate's cost: CPU seconds (thread time) of ``VadGate.process`` per second of audio, and of
  the whole pipeline, in 1 s blocks (the CLI's ``--fast`` file block).

Gates: ``webrtc`` (the default: webrtcvad plus the speech-level gate,
``speech_level_margin_db`` 22 dB), ``webrtc, no level gate`` (webrtcvad alone, the default
before), and ``silero`` (``engine = "silero"``, when onnxruntime is installed).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import figure, result
from emostream.audio.files import load_mono
from emostream.engine.pipeline import ChannelPipeline
from emostream.engine.smoothing import SmoothingConfig
from emostream.errors import ConfigError
from emostream.frontend.vad import VadConfig, VadGate
from emostream.inference.model import EmotionModel

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ravdess"
SAMPLE_RATE_HZ = 16000
PAUSE_S = 3.0
LEVELS_DBFS = (-40.0, -50.0, -60.0)
BLOCK_SAMPLES = SAMPLE_RATE_HZ  # 1 s, the CLI's --fast file block
PEAK_DBFS = -1.0


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink noise (power falling as 1/f), float64 (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return np.asarray(noise / np.sqrt(np.mean(noise**2)), dtype=np.float64)


Spans = list[tuple[int, int]]


def pause_recording(level_dbfs: float, seed: int = 0) -> tuple[np.ndarray, Spans, Spans]:
    """The clips with a pink-noise pause after each: (signal float32, utterance spans, pause spans) in samples."""
    rng = np.random.default_rng(seed)
    clips = sorted(FIXTURES.glob("*/*.flac"))
    parts: list[np.ndarray] = []
    utterances: list[tuple[int, int]] = []
    pauses: list[tuple[int, int]] = []
    position = 0
    for path in clips:
        clip = load_mono(path, SAMPLE_RATE_HZ)
        clip = clip / np.max(np.abs(clip)) * 10 ** (PEAK_DBFS / 20)
        noise = pink_noise(round(PAUSE_S * SAMPLE_RATE_HZ), rng) * 10 ** (level_dbfs / 20)
        parts += [clip, noise]
        utterances.append((position, position + clip.size))
        pauses.append((position + clip.size, position + clip.size + noise.size))
        position += clip.size + noise.size
    return np.concatenate(parts).astype(np.float32), utterances, pauses


def _gates(model: EmotionModel) -> dict[str, VadConfig]:
    base = model.metadata.vad_config
    gates = {
        "webrtc (default)": base,
        "webrtc, no level gate": dataclasses.replace(base, speech_level_margin_db=None),
    }
    try:
        from emostream.frontend import silero

        silero.check_available(model.metadata.feature_config.sample_rate_hz)
        gates["silero"] = dataclasses.replace(base, engine="silero")
    except ConfigError:
        pass  # onnxruntime not installed: the optional detector is left out
    return gates


def measure(model: EmotionModel, vad: VadConfig, level_dbfs: float) -> dict[str, Any]:
    """Pause and speech readings and the CPU cost of one gate on one recording."""
    signal, utterances, pauses = pause_recording(level_dbfs)
    rate = SAMPLE_RATE_HZ
    gate = VadGate(vad, rate)
    started = time.thread_time()
    for i in range(0, signal.size, BLOCK_SAMPLES):
        gate.process(signal[i : i + BLOCK_SAMPLES])
    vad_cpu_s = time.thread_time() - started
    pipeline = ChannelPipeline(model, vad, SmoothingConfig())
    started = time.thread_time()
    hops = []
    for i in range(0, signal.size, BLOCK_SAMPLES):
        hops += pipeline.process(signal[i : i + BLOCK_SAMPLES])
    hops += pipeline.flush()
    pipeline_cpu_s = time.thread_time() - started
    pause_read = 0
    for start, stop in pauses:
        inside = [h for h in hops if h.t_start * rate >= start and h.t_end * rate <= stop]
        if inside:
            middle = (start + stop) / 2 / rate
            hop = min(inside, key=lambda h: abs((h.t_start + h.t_end) / 2 - middle))
            pause_read += hop.scores is not None
    speech_read = sum(
        1
        for h in hops
        if h.scores is not None and any(h.t_start * rate < b and h.t_end * rate > a for a, b in utterances)
    )
    audio_s = signal.size / rate
    return {
        "pause_read": pause_read,
        "pauses": len(pauses),
        "speech_read": speech_read,
        "vad_cpu_per_audio_s": vad_cpu_s / audio_s,
        "pipeline_cpu_per_audio_s": pipeline_cpu_s / audio_s,
    }


def run(args: Any) -> dict[str, Any]:
    from emostream.api import load_model

    name = (args.models or ["fast"])[0]
    model = load_model(name, num_threads=1)
    levels = LEVELS_DBFS[:1] if getattr(args, "quick", False) else LEVELS_DBFS
    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {"model": name, "pause_s": PAUSE_S, "peak_dbfs": PEAK_DBFS}
    for label, vad in _gates(model).items():
        for level in levels:
            m = measure(model, vad, level)
            details[f"{label} @ {level:g} dBFS"] = m
            default = label.endswith("(default)")
            figures.append(
                figure(
                    f"{label}: pauses read as emotion, noise {level:g} dBFS",
                    m["pause_read"],
                    f"of {m['pauses']}",
                    target=0.0 if default else None,
                    note=f"speech hops read {m['speech_read']}",
                )
            )
        figures.append(
            figure(
                f"{label}: VAD CPU per audio s",
                m["vad_cpu_per_audio_s"],
                "s/s",
                note=f"whole pipeline {m['pipeline_cpu_per_audio_s']:.4f} s/s ({name})",
            )
        )
    return result("pauses", figures, details)
