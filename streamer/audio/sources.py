"""Audio sources: microphone (PortAudio), audio file, raw PCM on stdin.

Every source gives float32 blocks of shape (n, channels) in [-1, 1] at ``rate_hz``:
``start()``, then ``read(timeout)`` until it returns None (end of input; an empty
array means "nothing yet"), then ``stop()``. Overflow counters report audio lost
because processing fell behind (microphone only).
"""

from __future__ import annotations

import io
import os
import select
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile as sf

from emostream.audio.codecs import raw_format
from emostream.audio.files import MIN_DURATION_S, check_duration, check_samples, open_audio, truncation_warning
from emostream.audio.format_probe import format_mismatch
from emostream.audio.ringbuffer import RingBuffer
from emostream.errors import AudioInputError, ConfigError, DeviceError

FloatArray = npt.NDArray[np.float32]


class Source:
    """Base of all sources; subclasses set name, rate_hz and channels."""

    name: str = "source"
    rate_hz: int = 0
    channels: int = 1

    def start(self) -> None:
        """Begin producing audio."""

    def read(self, timeout: float = 0.1) -> FloatArray | None:
        """Next block (n, channels) float32; empty if none is ready within ``timeout`` s; None at the end."""
        raise NotImplementedError

    def stop(self) -> None:
        """Release the device or file; safe to call twice."""

    @property
    def dropped_samples(self) -> int:
        """Frames lost because the consumer fell behind."""
        return 0

    @property
    def overflow_count(self) -> int:
        """Number of overflow events (ring full or device overflow)."""
        return 0

    @property
    def warnings(self) -> list[str]:
        """Problems noticed while reading that did not stop the stream (shown live; :attr:`errors` among them)."""
        return self.errors

    @property
    def errors(self) -> list[str]:
        """The :attr:`warnings` that make a run exit 3 (audio lost: a truncated file, a stream cut mid-frame)."""
        return []


# ---------------------------------------------------------------- stdin

PROBE_S = 2.0  # seconds of stdin per look of the format check
PROBE_MAX_S = 30.0  # the format check gives up after this much input (silence throughout)


def _pollable_fd(stream: BinaryIO) -> int | None:
    """The OS file descriptor of a pipe/file stream that nothing has buffered from yet, else None."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd if os.name == "posix" else None


class StdinSource(Source):
    """Interleaved raw PCM from a binary stream (``sys.stdin.buffer``).

    A real pipe or file is read unbuffered with a timeout (so Ctrl-C is prompt even when
    the writer is silent); partial frames are kept until the rest arrives. ``fmt`` names an
    entry of :data:`emostream.audio.codecs.RAW_FORMATS` (case-insensitive).
    """

    def __init__(self, stream: BinaryIO, rate_hz: int, channels: int, fmt: str = "s16le", block_ms: int = 50) -> None:
        if rate_hz <= 0:
            raise ConfigError(f"--rate is {rate_hz}; raw PCM needs its sample rate in Hz, e.g. --rate 16000")
        if not 1 <= channels <= 32:
            raise ConfigError(f"--channels is {channels}; expected 1 to 32")
        self.format = raw_format(fmt)
        self.stream = stream
        self.rate_hz = rate_hz
        self.channels = channels
        self.name = f"stdin ({self.format.name}, {rate_hz} Hz, {channels} ch)"
        self._frame_bytes = self.format.bytes_per_sample * channels
        self._block_bytes = max(1, rate_hz * block_ms // 1000) * self._frame_bytes
        self._pending = b""
        self._done = False
        self.truncated_bytes = 0
        self.frames_read = 0
        self._fd = _pollable_fd(stream)
        # the format check (emostream.audio.format_probe) looks at PROBE_S-second stretches of the first
        # PROBE_MAX_S seconds until one is audible enough to tell
        self._probe = bytearray()
        self._probe_bytes = max(1, int(rate_hz * PROBE_S)) * self._frame_bytes
        self._probe_left = max(1, int(PROBE_MAX_S / PROBE_S))
        self.format_warning: str | None = None

    def _read_bytes(self, timeout: float) -> bytes | None:
        """Up to one block of bytes; None if nothing arrived within ``timeout`` (b"" at the end)."""
        if self._fd is None:
            return self.stream.read(self._block_bytes)  # in-memory streams: never wait
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return None
        return os.read(self._fd, self._block_bytes)  # unbuffered: whatever the pipe holds, up to a block

    def read(self, timeout: float = 0.1) -> FloatArray | None:
        if self._done:
            return None
        data = self._read_bytes(timeout)
        if data is None:
            return np.zeros((0, self.channels), dtype=np.float32)
        if not data:
            self._done = True
            self.truncated_bytes = len(self._pending)
            self._check_length()
            return None
        data = self._pending + data
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        self.frames_read += whole // self._frame_bytes
        self._check_format(data[:whole])
        return self.format.decode(data[:whole]).reshape(-1, self.channels)

    def _check_format(self, data: bytes) -> None:
        """Feed the format check until it decides (at most :data:`PROBE_MAX_S` seconds of input)."""
        if self._probe_left <= 0:
            return
        self._probe += data
        while len(self._probe) >= self._probe_bytes and self._probe_left > 0:
            stretch = bytes(self._probe[: self._probe_bytes])
            del self._probe[: self._probe_bytes]
            self._probe_left -= 1
            decided, message = format_mismatch(stretch, self.format.name, self.channels)
            if decided:
                self.format_warning = message
                self._probe_left = 0
        if self._probe_left <= 0:
            self._probe = bytearray()

    def _check_length(self) -> None:
        """At the end of input: AudioInputError when no audio came at all, or less than a file needs
        (:data:`~emostream.audio.files.MIN_DURATION_S`), as for a file."""
        if self.frames_read == 0:
            raise AudioInputError(
                f"stdin ended without any audio ({self.truncated_bytes} byte(s) received); expected raw "
                f"{self.format.name} PCM, e.g. `arecord -f S16_LE -r 16000 -c 1 -t raw | "
                "emostream --stdin --rate 16000`"
            )
        duration_s = self.frames_read / self.rate_hz
        if duration_s < MIN_DURATION_S:
            raise AudioInputError(
                f"stdin ended after {duration_s:.2f} s of audio; at least {MIN_DURATION_S} s is needed for a reading "
                f"(check --rate: {self.rate_hz} Hz was given)"
            )

    @property
    def warnings(self) -> list[str]:
        return self.errors + ([] if self.format_warning is None else [self.format_warning])

    @property
    def errors(self) -> list[str]:
        if not self.truncated_bytes:
            return []
        return [
            f"stdin ended in the middle of a frame: the last {self.truncated_bytes} byte(s) were ignored "
            f"(a frame is {self._frame_bytes} bytes: {self.channels} channel(s) x {self.format.bytes_per_sample}); "
            "check --format and --channels",
        ]


# ---------------------------------------------------------------- file


FAST_BLOCK_MS = 4000


class FileSource(Source):
    """A WAV/FLAC/OGG file read in blocks, at real-time pace unless ``fast``."""

    def __init__(self, path: str | Path, block_ms: int = 50, fast: bool = False) -> None:
        self.path = Path(path)
        self._file = open_audio(self.path)
        try:
            check_duration(self.path, self._file.frames / self._file.samplerate)  # as `analyze` does
        except AudioInputError:
            self._file.close()
            raise
        self._truncated = truncation_warning(self._file, self.path)
        self.rate_hz = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.name = f"file {self.path.name}"
        self.fast = fast
        # as fast as possible: large reads (1 s) save per-block overhead; paced: block_ms
        self._block = max(1, self.rate_hz * (max(block_ms, FAST_BLOCK_MS) if fast else block_ms) // 1000)
        self._sent = 0
        self._t0 = 0.0

    @property
    def duration_s(self) -> float:
        return float(self._file.frames) / self.rate_hz

    def start(self) -> None:
        self._t0 = time.monotonic()

    def read(self, timeout: float = 0.1) -> FloatArray | None:
        if self._file.closed:
            return None
        if not self.fast:
            due = self._t0 + self._sent / self.rate_hz
            delay = due - time.monotonic()
            if delay > timeout:
                time.sleep(timeout)
                return np.zeros((0, self.channels), dtype=np.float32)
            if delay > 0:
                time.sleep(delay)
        try:
            block = self._file.read(self._block, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioInputError(
                f"{self.path}: decoding failed after {self._sent / self.rate_hz:.2f} s of audio ({exc}); "
                "the file is corrupt or cut off"
            ) from exc
        if block.shape[0] == 0:
            return None
        check_samples(block, self._sent, self.rate_hz, self.path)
        self._sent += block.shape[0]
        return np.ascontiguousarray(block, dtype=np.float32)

    def stop(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def errors(self) -> list[str]:
        return [] if self._truncated is None else [self._truncated]


# ---------------------------------------------------------------- microphone


def _sd() -> Any:
    try:
        import sounddevice  # noqa: PLC0415 - PortAudio is loaded only when a device is used
    except OSError as exc:  # libportaudio missing
        raise DeviceError(
            f"PortAudio is not available ({exc}); install it (Debian/Ubuntu: apt install libportaudio2)"
        ) from exc
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """Input devices as dicts with index, name, channels, default_rate_hz, hostapi."""
    sd = _sd()
    apis = sd.query_hostapis()
    devices = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            devices.append(
                {
                    "index": index,
                    "name": dev["name"],
                    "channels": int(dev["max_input_channels"]),
                    "default_rate_hz": int(dev["default_samplerate"]),
                    "hostapi": apis[dev["hostapi"]]["name"],
                }
            )
    return devices


def default_input_device() -> int | None:
    """Index of the system's default input device, or None when there is none."""
    devices = input_devices()
    if not devices:
        return None
    default = _sd().default.device[0]
    indices = [d["index"] for d in devices]
    return int(default) if default in indices else indices[0]


def _device_list(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "no input devices are available"
    return "available input devices: " + "; ".join(f"[{d['index']}] {d['name']}" for d in devices)


def find_device(spec: int | str | None) -> dict[str, Any]:
    """The input device for an index or a case-insensitive part of a name (None = default)."""
    devices = input_devices()
    if not devices:
        raise DeviceError("no audio input device found; connect a microphone, or use --file, --stdin or --demo")
    if spec is None:
        index = default_input_device()
        return next(d for d in devices if d["index"] == index)
    text = str(spec).strip()
    if text.isdigit():
        match = [d for d in devices if d["index"] == int(text)]
    else:
        match = [d for d in devices if d["name"].lower() == text.lower()]
        match = match or [d for d in devices if text.lower() in d["name"].lower()]
    if not match:
        raise DeviceError(f"no input device matches {spec!r}; {_device_list(devices)}")
    return match[0]


class MicSource(Source):
    """Live capture through sounddevice; the callback only copies into a ring buffer."""

    def __init__(
        self,
        device: int | str | None = None,
        rate_hz: int | None = None,
        channels: int = 1,
        block_ms: int = 50,
        ring_seconds: float = 10.0,
    ) -> None:
        sd = _sd()
        dev = find_device(device)
        if channels > dev["channels"]:
            raise DeviceError(
                f"device [{dev['index']}] {dev['name']} has {dev['channels']} input channel(s), "
                f"{channels} requested; use --channels {dev['channels']} or fewer"
            )
        rate = int(rate_hz or dev["default_rate_hz"])
        try:
            sd.check_input_settings(device=dev["index"], channels=channels, dtype="float32", samplerate=rate)
        except sd.PortAudioError as exc:
            raise DeviceError(
                f"device [{dev['index']}] {dev['name']} refuses {rate} Hz with {channels} channel(s) ({exc}); "
                f"its default rate is {dev['default_rate_hz']} Hz: try --rate {dev['default_rate_hz']}"
            ) from exc
        self.device = dev
        self.rate_hz = rate
        self.channels = channels
        self.name = f"microphone [{dev['index']}] {dev['name']}"
        self._block = max(1, rate * block_ms // 1000)
        self._ring = RingBuffer(max(self._block * 4, int(rate * ring_seconds)), channels)
        self._device_overflows = 0
        self._stream: Any = None
        self._sd = sd

    def _callback(self, indata: FloatArray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self._device_overflows += 1
        self._ring.write(indata)

    def start(self) -> None:
        try:
            self._stream = self._sd.InputStream(
                device=self.device["index"],
                samplerate=self.rate_hz,
                channels=self.channels,
                dtype="float32",
                blocksize=self._block,
                callback=self._callback,
                finished_callback=self._ring.close,  # the device went away: end of input, not a hang
            )
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise DeviceError(f"cannot open {self.name} ({exc}); check that no other program holds it") from exc

    def read(self, timeout: float = 0.1) -> FloatArray | None:
        if self._ring.closed and self._ring.available == 0:
            return None
        return self._ring.read(self._block * 4, timeout)

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        self._ring.close()

    @property
    def dropped_samples(self) -> int:
        return self._ring.dropped_frames

    @property
    def overflow_count(self) -> int:
        return self._ring.overflow_events + self._device_overflows
