"""The peers of ``bench_peers.py``, one per process: ``python -m benchmarks.peers NAME FILE``.

Each reads a 16 kHz mono file and does what its name says, printing one JSON line
(``{"peer": NAME, "audio_s": ..., "windows": ...}``); ``bench_peers`` measures the process's
CPU time (user + sys) and wall time, launch to exit, so imports count as they do for a user.

* ``floor``: decode the file in 1 s blocks and run webrtcvad (aggressiveness 2) on every
  30 ms frame: what any live monitor pays before it analyses anything.
* ``opensmile``: openSMILE's eGeMAPS v02 low-level descriptors computed once over the
  stream (the ``opensmile`` package), then pooled (mean and std) per 2 s window every 0.5 s.
* ``librosa``: per 2 s window every 0.5 s, the features earlier speech-emotion projects
  computed with librosa (40 MFCCs, 12 chroma, 128-band mel spectrogram, spectral contrast,
  zero-crossing rate and RMS, each averaged over the window).

``opensmile`` and ``librosa`` are optional benchmark dependencies (``pip install opensmile
librosa``); without them ``bench_peers`` reports those peers as not installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 16000
WINDOW_S = 2.0
HOP_S = 0.5
PEERS = ("floor", "opensmile", "librosa")
FloatArray = npt.NDArray[np.float32]


def _read(path: Path) -> FloatArray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE_HZ:
        raise SystemExit(f"{path}: {rate} Hz; the peers read {SAMPLE_RATE_HZ} Hz files")
    return np.ascontiguousarray(audio.mean(axis=1), dtype=np.float32)


def floor(path: Path) -> dict[str, float]:
    """Decode in 1 s blocks + webrtcvad on every 30 ms frame."""
    import soundfile as sf
    import webrtcvad

    vad = webrtcvad.Vad(2)
    frame = SAMPLE_RATE_HZ * 30 // 1000
    frames = speech = 0
    carry = np.zeros(0, dtype=np.int16)
    with sf.SoundFile(path) as f:
        for block in f.blocks(blocksize=SAMPLE_RATE_HZ, dtype="int16", always_2d=True):
            pcm = np.concatenate([carry, block[:, 0]])
            n = pcm.size // frame
            data = pcm[: n * frame].tobytes()
            for i in range(n):
                speech += vad.is_speech(data[2 * frame * i : 2 * frame * (i + 1)], SAMPLE_RATE_HZ)
            frames += n
            carry = pcm[n * frame :]
    return {"audio_s": frames * 0.03, "windows": frames, "speech_frames": speech}


def _window_starts(n_samples: int) -> range:
    window, hop = round(WINDOW_S * SAMPLE_RATE_HZ), round(HOP_S * SAMPLE_RATE_HZ)
    return range(0, max(1, n_samples - window + 1), hop)


def opensmile_lld(path: Path) -> dict[str, float]:
    """eGeMAPS v02 LLDs once over the stream, pooled per window."""
    import opensmile

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    signal = _read(path)
    lld = smile.process_signal(signal, SAMPLE_RATE_HZ).to_numpy(dtype=np.float32)  # one row per 10 ms
    per_s, span = 100, round(WINDOW_S * 100)
    firsts = [start * per_s // SAMPLE_RATE_HZ for start in _window_starts(signal.size)]
    blocks = [lld[first : first + span] for first in firsts]
    pooled = [np.concatenate([rows.mean(axis=0), rows.std(axis=0)]) for rows in blocks if rows.size]
    return {"audio_s": signal.size / SAMPLE_RATE_HZ, "windows": len(pooled), "dims": int(pooled[0].size)}


def librosa_windows(path: Path) -> dict[str, float]:
    """The classic librosa feature set per 2 s window every 0.5 s."""
    import librosa

    signal = _read(path)
    window = round(WINDOW_S * SAMPLE_RATE_HZ)
    dims = 0
    count = 0
    for start in _window_starts(signal.size):
        x = signal[start : start + window]
        stft = np.abs(librosa.stft(x))
        parts = [
            librosa.feature.mfcc(y=x, sr=SAMPLE_RATE_HZ, n_mfcc=40),
            librosa.feature.chroma_stft(S=stft, sr=SAMPLE_RATE_HZ),
            librosa.feature.melspectrogram(y=x, sr=SAMPLE_RATE_HZ),
            librosa.feature.spectral_contrast(S=stft, sr=SAMPLE_RATE_HZ),
            librosa.feature.zero_crossing_rate(x),
            librosa.feature.rms(y=x),
        ]
        dims = int(sum(p.shape[0] for p in parts))
        count += 1
    return {"audio_s": signal.size / SAMPLE_RATE_HZ, "windows": count, "dims": dims}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PEERS:
        print(f"usage: python -m benchmarks.peers {{{','.join(PEERS)}}} FILE", file=sys.stderr)
        return 2
    name, path = argv[0], Path(argv[1])
    run = {"floor": floor, "opensmile": opensmile_lld, "librosa": librosa_windows}[name]
    print(json.dumps({"peer": name, **run(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
