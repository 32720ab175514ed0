"""emostream: real-time speech-emotion monitoring (the runtime needs no TensorFlow).

The Python API (see :mod:`emostream.api`)::

    import emostream
    model = emostream.load_model()
    mon = emostream.Monitor(model, sample_rate_hz=8000, channels=2, roles=("customer", "agent"))
    for event in mon.feed(block):
        ...
    mon.close(); mon.summary()
    result = emostream.analyze_file("call.wav")

The package layout follows the data flow: ``audio`` (sources, ring buffer, resampling,
codecs) -> ``frontend`` (VAD, features, windows) -> ``inference`` (TFLite, model
metadata) -> ``engine`` (plan, session, pipelines, smoothing, statistics, events) ->
``outputs`` and ``alerts`` (observers of the events) -> ``apps`` (command line, live
monitor, file analysis, call batches). ``emostream.train`` (extra ``[train]``) makes models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Monitor", "__version__", "analyze_file", "load_model"]

if TYPE_CHECKING:
    from emostream.api import Monitor, analyze_file, load_model


def __getattr__(name: str) -> Any:
    """The API names, imported on first use so that ``import emostream.x`` stays light."""
    if name in ("Monitor", "analyze_file", "load_model"):
        from emostream import api  # noqa: PLC0415

        return getattr(api, name)
    raise AttributeError(f"module 'emostream' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the lazily imported API names (``dir(emostream)`` lists ``Monitor``)."""
    return sorted({*globals(), *__all__})
