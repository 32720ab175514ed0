"""Reading audio files: whole signals, bounded-memory mono streams, folders of recordings.

Whole-signal reads (:func:`read_audio`, :func:`load_mono`) are for short clips (training,
tests). Recordings of any length go through :class:`AudioBlocks` (blocks with their
channels, as ``emostream calls`` wants them) or :class:`MonoStream`, which mixes each
block to mono and resamples it with the stateful
:class:`~emostream.audio.resample.StreamResampler`, so memory stays bounded whatever the
length and the samples equal the whole-signal path's (within float tolerance).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from emostream.audio.resample import StreamResampler
from emostream.engine.checks import MAX_PEAK
from emostream.errors import AudioInputError

FloatArray = npt.NDArray[np.float32]

# Suffixes of the audio files a folder argument stands for (`analyze DIR`, `calls DIR`).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".au", ".aiff", ".aif"})
# Shortest recording analysed, live (--file) and in `analyze` alike: less gives no reading worth showing.
MIN_DURATION_S = 0.5
STREAM_BLOCK_S = 5.0
# any rate and channel count is read as it is: the hint only changes the container (a call's channels stay apart)
CONVERT_HINT = "Convert it to WAV, e.g. `ffmpeg -i IN OUT.wav`"
_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open a WAV/FLAC/OGG file for block reads; AudioInputError for a missing, undecodable or empty file."""
    file = Path(path)
    if file.is_dir():
        raise AudioInputError(f"{file}: is a folder; give an audio file (or a folder where a command takes folders)")
    if not file.is_file():
        raise AudioInputError(f"{file}: no such file; check the path")
    try:
        handle = sf.SoundFile(str(file))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)  # without the path again
        raise AudioInputError(
            f"{file}: cannot be decoded as audio ({reason}); expected a WAV, FLAC or OGG file. {CONVERT_HINT}"
        ) from exc
    if handle.frames <= 0 or handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioInputError(f"{file}: contains no samples; record or pick a file with audio in it")
    return handle


def truncation_warning(handle: sf.SoundFile, path: str | Path) -> str | None:
    """A message when the file's header promises more audio than the file holds (a cut-off WAV), else None."""
    match = _DATA_CHUNK.search(handle.extra_info or "")
    if match is None:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared <= present or present <= 0:
        return None
    frames = handle.frames
    declared_s = frames * declared / present / handle.samplerate
    return (
        f"{path}: the header says {declared_s:.2f} s of audio but the file holds {frames / handle.samplerate:.2f} s; "
        "it is truncated (an interrupted recording or copy?); only the audio present is used"
    )


def check_samples(block: FloatArray, first_frame: int, rate_hz: int, path: str | Path) -> None:
    """AudioInputError naming ``path`` and the first bad sample when a decoded block is not float audio in [-1, 1].

    ``block``: (n, channels) float32 as read, whose first frame is frame ``first_frame`` of
    the file. Refused: NaN or infinite samples (a damaged float file) and peaks above
    :data:`~emostream.engine.checks.MAX_PEAK` (samples stored at the wrong scale); the same
    rule the live input check applies, with a message about the file rather than ``--format``.
    """
    if block.size == 0:
        return
    with np.errstate(all="ignore"):
        lo, hi = float(block.min()), float(block.max())  # NaN propagates through min/max
        if np.isfinite(lo) and np.isfinite(hi) and max(-lo, hi) <= MAX_PEAK:
            return
        row, col = (int(v) for v in np.argwhere(~(np.abs(block) <= MAX_PEAK))[0])
    value = float(block[row, col])
    frame = first_frame + row
    where = f"sample {frame} ({frame / rate_hz:.3f} s), channel {col}"
    if not np.isfinite(value):
        raise AudioInputError(
            f"{path}: holds a non-finite sample ({value}) at {where}; expected audio samples in [-1, 1]. "
            "The file is damaged (a float WAV/FLAC with NaN or infinite values): export it again from its source"
        )
    raise AudioInputError(
        f"{path}: holds an implausible sample value ({value:.3g}) at {where}; expected float audio in [-1, 1] "
        f"(peaks up to {MAX_PEAK:g} are accepted). The samples were stored at the wrong scale (integer PCM values "
        "in a float file?): export it again as 16-bit PCM"
    )


def read_audio(path: str | Path) -> tuple[FloatArray, int]:
    """Read a WAV/FLAC/OGG file as float32 in [-1, 1], shape (n_samples, n_channels), and its rate in Hz.

    Raises :class:`AudioInputError` for a missing, unreadable, corrupt or empty file, and
    for samples that are not audio (:func:`check_samples`).
    """
    with open_audio(path) as handle:
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioInputError(f"{path}: decoding failed ({exc}); the file is corrupt. {CONVERT_HINT}") from exc
        rate = int(handle.samplerate)
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: contains no samples; record or pick a file with audio in it")
    check_samples(data, 0, rate, path)
    return np.ascontiguousarray(data), rate


def to_mono(samples: FloatArray) -> FloatArray:
    """Average the channels of (n_samples, n_channels) audio; shape (n_samples,)."""
    if samples.ndim == 1:
        return samples
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))


def resample(samples: FloatArray, rate_in_hz: int, rate_out_hz: int) -> FloatArray:
    """Resample a whole signal (1-D or (n, channels)) with soxr's high-quality filter, float32."""
    if rate_in_hz == rate_out_hz:
        return samples
    return np.asarray(soxr.resample(samples, rate_in_hz, rate_out_hz, quality="HQ"), dtype=np.float32)


def load_mono(path: str | Path, rate_hz: int) -> FloatArray:
    """Read a file, mix it to mono and bring it to ``rate_hz``; float32 shape (n_samples,)."""
    samples, rate = read_audio(path)
    return resample(to_mono(samples), rate, rate_hz)


class AudioBlocks:
    """A file as (n, channels) float32 blocks at its own rate, read ``block_s`` seconds at a time (bounded memory).

    Iterating yields the blocks as decoded (each checked by :func:`check_samples`);
    ``frames_read``, ``duration_s`` and ``warning`` (a truncated header) follow the reading.
    Opening raises AudioInputError like :func:`read_audio`; so do a decoding error part-way
    (naming the position) and a block that is not audio. The file is closed at the end of
    iteration or by :meth:`close` (also a context manager).
    """

    def __init__(self, path: str | Path, block_s: float | None = None) -> None:
        self.path = Path(path)
        self._handle = open_audio(path)
        self.rate_in = int(self._handle.samplerate)
        self.channels = int(self._handle.channels)
        self.header_frames = int(self._handle.frames)
        self.warning = truncation_warning(self._handle, path)
        self.frames_read = 0
        self.block_frames = max(1, int((STREAM_BLOCK_S if block_s is None else block_s) * self.rate_in))

    @property
    def header_duration_s(self) -> float:
        """Duration the file claims (frames in its header)."""
        return self.header_frames / self.rate_in

    @property
    def duration_s(self) -> float:
        """Duration of the audio read so far."""
        return self.frames_read / self.rate_in

    def close(self) -> None:
        """Release the file (also done at the end of iteration)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[FloatArray]:
        try:
            while True:
                try:
                    block = self._handle.read(self.block_frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                    raise AudioInputError(
                        f"{self.path}: decoding failed after {self.duration_s:.2f} s of audio ({exc}); "
                        f"the file is corrupt or cut off. {CONVERT_HINT}"
                    ) from exc
                if block.shape[0] == 0:
                    break
                check_samples(block, self.frames_read, self.rate_in, self.path)
                self.frames_read += block.shape[0]
                yield block
        finally:
            self.close()


class MonoStream(AudioBlocks):
    """A file as mono float32 blocks at ``rate_hz``, read ``block_s`` seconds at a time (bounded memory).

    :class:`AudioBlocks` mixed to mono and resampled with the stateful resampler:
    iterating yields 1-D blocks (the last one carries the resampler's tail).
    """

    def __init__(self, path: str | Path, rate_hz: int, block_s: float | None = None) -> None:
        super().__init__(path, block_s)
        self.rate_hz = rate_hz

    def __iter__(self) -> Iterator[FloatArray]:
        resampler = StreamResampler(self.rate_in, self.rate_hz, 1)
        for block in super().__iter__():
            out = resampler.process(to_mono(block))
            if out.size:
                yield out[:, 0]
        tail = resampler.flush()
        if tail.size:
            yield tail[:, 0]


def check_duration(path: str | Path, duration_s: float) -> None:
    """AudioInputError when a recording is empty or shorter than :data:`MIN_DURATION_S`."""
    if duration_s <= 0:
        raise AudioInputError(f"{path}: contains no samples; record or pick a file with audio in it")
    if duration_s < MIN_DURATION_S:
        raise AudioInputError(
            f"{path}: {duration_s:.2f} s of audio is too short; at least {MIN_DURATION_S} s is needed for a reading"
        )


def audio_files_in(folder: str | Path) -> list[Path]:
    """The audio files (by suffix, :data:`AUDIO_SUFFIXES`) under ``folder``, recursively, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def suffix_list() -> str:
    """The audio suffixes looked for in folders, for messages."""
    return ", ".join(sorted(AUDIO_SUFFIXES))
