"""Ctrl-C and SIGTERM for the command line: one clean end whenever they arrive.

:func:`handled` installs, for the duration of a command, a handler for SIGINT and SIGTERM
that records the signal (the exit code is 128 + its number: 130, 143) and raises
:class:`KeyboardInterrupt`, so ``kill`` and ``docker stop`` end a run as cleanly as Ctrl-C.

During start-up (imports, parsing, loading the model, opening the source and the
``--jsonl`` file) the first signal is *held*: raising it there would break an import half
way (a traceback) or end the run before its records exist. The live monitor releases it
once its engine runs (:func:`release`) and stops at once, so the ``start`` and ``end``
records are written and the summary printed; other commands release it before they start
(:func:`raise_if_held`). A second signal during start-up is not held (a way out of a hung
start).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM exits 128 + 15 = 143
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []
_holding: list[bool] = [False]


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    if _holding[0] and len(_received) == 1:
        return  # start-up: released by release() or raise_if_held()
    raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM end the command cleanly (see the module docstring); the previous handlers after.

    Signals are held from here until :func:`release` or :func:`raise_if_held`. Outside the
    main thread (an embedding program) nothing is installed.
    """
    _received.clear()
    previous: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread: signals stay the caller's
        pass
    _holding[0] = bool(previous)
    try:
        yield
    finally:
        _holding[0] = False
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def release() -> bool:
    """End start-up: signals raise from now on; True when one arrived during start-up (the run should stop)."""
    _holding[0] = False
    return bool(_received)


def raise_if_held() -> None:
    """End start-up; KeyboardInterrupt if a signal arrived during it."""
    if release():
        raise KeyboardInterrupt


def install_sigterm_handler() -> None:
    """SIGTERM raises KeyboardInterrupt (recorded for the exit code), as inside :func:`handled`."""
    signal.signal(signal.SIGTERM, _on_signal)


def interrupted_exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM (128 + the last signal's number)."""
    return 128 + _received[-1] if _received else EXIT_INTERRUPTED
