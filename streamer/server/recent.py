"""A live call's records as the pages need them: the last hop per channel, the active alerts, the recent timeline.

Kept by the server for each of its calls (:class:`~emostream.server.calls.Call`) and by a
fleet's supervisor for each call of every replica (:mod:`emostream.server.fleet`), so that
``/api/calls`` and the ``/events`` snapshot say the same in both: ``last`` (channel -> the
last hop record or None), ``alerts`` (the active alert records) and, in the snapshot,
``history`` (per channel the last :data:`HISTORY_S` s of hops as ``[t_end, emotion,
uncertain, is_speech]``) and ``alert_history`` (the alert records of that time), so that a
page opened mid-call starts with the call's timeline filled.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

HISTORY_S = 180.0  # the recent timeline of each channel sent in the /events snapshot (the supervisor page's window)
MAX_ALERT_HISTORY = 100


class RecentRecords:
    """The last hop per channel, active alerts and recent timeline of one call (see the module docstring)."""

    def __init__(self, channels: Iterable[int], hop_s: float) -> None:
        """``channels``: the call's channel indices; ``hop_s``: seconds between two hops of a channel."""
        self._keep = int(HISTORY_S / max(hop_s, 0.01)) + 2
        self.last: dict[str, dict[str, Any] | None] = {}
        self.history: dict[str, collections.deque[list[Any]]] = {}
        for channel in channels:
            self.add_channel(channel)
        self.active_alerts: dict[tuple[int, str], dict[str, Any]] = {}
        self.alert_history: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_ALERT_HISTORY)

    def add_channel(self, channel: int) -> None:
        """Track ``channel`` (a no-op for one already tracked)."""
        key = str(channel)
        if key not in self.history:
            self.last[key] = None
            self.history[key] = collections.deque(maxlen=self._keep)

    def hop(self, record: dict[str, Any], *, is_speech: bool) -> None:
        """A hop record (``channel``, ``t_end``, ``emotion``, ``uncertain``) of the call."""
        channel = int(record.get("channel") or 0)
        self.add_channel(channel)
        key = str(channel)
        self.last[key] = record
        self.history[key].append([record["t_end"], record.get("emotion"), bool(record.get("uncertain")), is_speech])

    def alert(self, record: dict[str, Any]) -> None:
        """An alert record (``channel``, ``rule``, ``state`` fired or cleared) of the call."""
        key = (int(record.get("channel") or 0), str(record.get("rule")))
        if record.get("state") == "fired":
            self.active_alerts[key] = record
        else:
            self.active_alerts.pop(key, None)
        self.alert_history.append(record)

    def fields(self, *, history: bool = False) -> dict[str, Any]:
        """``last`` and ``alerts`` of the ``<call info>``; with ``history`` also ``history`` and ``alert_history``."""
        out: dict[str, Any] = {"last": dict(self.last), "alerts": list(self.active_alerts.values())}
        if history:
            out["history"] = {channel: list(points) for channel, points in self.history.items()}
            newest = max((points[-1][0] for points in self.history.values() if points), default=0.0)
            out["alert_history"] = [a for a in self.alert_history if (a.get("t_end") or newest) >= newest - HISTORY_S]
        return out
