"""Log lines of ``emostream serve`` that a client can cause, limited by wall-clock time, and made safe.

Anything a client can repeat (refused connections, dropped audio, idle timeouts, bad tokens)
goes through :class:`LogLimiter`: per kind of line (``key``) at most ``burst`` lines per
``interval_s`` seconds of wall-clock time, and at most ``global_burst`` such lines per
interval over all kinds. What is held back is counted and reported once per interval
(``... 290 more like this in the last 10 s``) by :meth:`LogLimiter.flush`, which the
server calls periodically. :class:`SafeFormatter` escapes control characters in every
message, so a client-given string can never start a fake log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL_S = 10.0
BURST = 5  # lines per key and interval
GLOBAL_BURST = 50  # limited lines per interval, all keys together
MAX_KEYS = 10000

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)}
_CONTROL[0x7F] = "\\x7f"


def escape_controls(text: str) -> str:
    """``text`` with control characters (newline, carriage return, escape...) written as ``\\xNN``."""
    return text.translate(_CONTROL)


class SafeFormatter(logging.Formatter):
    """A formatter whose messages never contain a raw control character (tracebacks are kept as they are)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


@dataclass
class _Window:
    start: float
    lines: int = 0
    held: int = 0
    level: int = logging.WARNING
    example: str = ""


class LogLimiter:
    """Rate-limits repeated log lines by wall-clock time (see the module docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = INTERVAL_S,
        burst: int = BURST,
        global_burst: int = GLOBAL_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.burst = burst
        self.global_burst = global_burst
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._global = _Window(clock())
        self.held_total = 0  # lines not written, since the start

    def log(self, key: str, level: int, message: str, *args: object) -> bool:
        """Write ``message % args`` at ``level`` unless ``key`` (or all keys) used up this interval; True if written."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval_s:
            if window is not None and window.held:
                self._report(key, window)
            if window is None and len(self._windows) >= MAX_KEYS:
                self.flush(force=True)
                self._windows.clear()
            window = self._windows[key] = _Window(now)
        if now - self._global.start >= self.interval_s:
            self._global = _Window(now)
        if window.lines >= self.burst or self._global.lines >= self.global_burst:
            window.held += 1
            window.level = max(window.level, level)
            if not window.example:
                window.example = message % args if args else message
            self.held_total += 1
            return False
        window.lines += 1
        self._global.lines += 1
        self.logger.log(level, message, *args)
        return True

    def limited(self, key: str, message: str, *args: object) -> bool:
        """A warning through :meth:`log`."""
        return self.log(key, logging.WARNING, message, *args)

    def flush(self, *, force: bool = False) -> None:
        """Report what was held back in intervals that are over (all of it when ``force``); forget idle keys."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if force or now - window.start >= self.interval_s:
                if window.held:
                    self._report(key, window)
                del self._windows[key]

    def _report(self, key: str, window: _Window) -> None:
        self.logger.log(
            window.level,
            "%d more line(s) like this in the last %.0f s (not written): %s",
            window.held,
            self.interval_s,
            window.example,
        )
        window.held = 0
        window.example = ""
