"""[audio]: where sound comes from and how it is buffered."""

from __future__ import annotations

from dataclasses import dataclass

from emostream.errors import InvalidSettingError


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """``device``: input device index or part of its name (None = system default);
    ``sample_rate_hz``: capture rate (None = device default; required for stdin);
    ``channels``: channels to capture; ``block_ms``: audio callback block length;
    ``ring_seconds``: capacity of the buffer between the callback and the processing
    thread; ``stdin_format``: raw PCM sample format read by ``--stdin``.
    """

    device: int | str | None = None
    sample_rate_hz: int | None = None
    channels: int = 1
    block_ms: int = 50
    ring_seconds: float = 10.0
    stdin_format: str = "s16le"

    def __post_init__(self) -> None:
        if self.sample_rate_hz is not None and not 1000 <= self.sample_rate_hz <= 384000:
            raise InvalidSettingError(
                "sample_rate_hz", f"is {self.sample_rate_hz}; expected a rate from 1000 to 384000 Hz"
            )
        if not 1 <= self.channels <= 32:
            raise InvalidSettingError("channels", f"is {self.channels}; expected 1 to 32")
        if not 5 <= self.block_ms <= 1000:
            raise InvalidSettingError("block_ms", f"is {self.block_ms}; expected 5 to 1000 ms")
        if not 0.5 <= self.ring_seconds <= 600:
            raise InvalidSettingError("ring_seconds", f"is {self.ring_seconds}; expected 0.5 to 600 s")
        if not self.stdin_format:
            raise InvalidSettingError("stdin_format", "is empty; expected a raw PCM format such as 's16le'")
