"""One thread for the math libraries (OpenBLAS, OpenMP, MKL) in emostream's processes.

emostream's matrix products are small (a window's frames at a time); a math library that
spreads them over every core gains nothing, and its idle threads spin between calls: on a
two-core machine 8 kHz input cost about twice the CPU of 16 kHz until OpenBLAS was held to
one thread. The analysis scales by processes instead (``calls --jobs``, the server's
workers), and each of those gets one thread too.

:func:`bound_math_threads` sets the libraries' thread variables (unless the user set one
of them: that choice is kept) before numpy is loaded, so this process and every process it
starts (the server's and ``calls``' workers inherit the environment) use one thread. If
the libraries are already loaded (an embedding program), it limits them through
threadpoolctl instead. :func:`math_threads_limited` is the scoped form the Python API uses
around its own work, leaving the host program's setting as it was.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MATH_THREAD_ENV = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""The environment variables the math libraries read their thread count from when they load."""

MATH_THREADS = 1


def user_chose_threads() -> bool:
    """True when one of :data:`MATH_THREAD_ENV` is set (by the user): emostream leaves the counts alone."""
    return any(key in os.environ for key in MATH_THREAD_ENV)


def bound_math_threads(threads: int = MATH_THREADS) -> None:
    """``threads`` threads for the math libraries of this process and the processes it starts.

    Does nothing when the user set one of :data:`MATH_THREAD_ENV`. Sets them all
    otherwise; when numpy is already loaded, also limits the loaded libraries now
    (threadpoolctl), since they read the variables only when they load.
    """
    if user_chose_threads():
        return
    for key in MATH_THREAD_ENV:
        os.environ[key] = str(threads)
    if "numpy" in sys.modules:
        _controller().limit(limits=threads)


_CONTROLLER: list[Any] = []


def _controller() -> Any:
    """The process's threadpoolctl controller (made once: it looks up the loaded libraries)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextmanager
def math_threads_limited(threads: int = MATH_THREADS) -> Iterator[None]:
    """Inside: the loaded math libraries use ``threads`` threads; after: what they used before.

    Does nothing when the user set one of :data:`MATH_THREAD_ENV`. Costs about 20 µs.
    """
    if user_chose_threads():
        yield
        return
    with _controller().limit(limits=threads):
        yield
