"""The broadcast hub behind ``/events``: every record of every call, fanned out without waiting.

Each record is encoded to JSON once and offered to every subscriber (all calls, or one
call) through the subscriber's own bounded queue. :meth:`EventHub.publish` never waits: a
full queue (a subscriber that reads slower than calls produce) loses the record, which is
counted, and the subscriber is sent ``{"type": "dropped", "count": N}`` before its next
record. So a slow or stuck browser never slows the audio path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":")).encode
MAX_TAKEN = 64  # records a subscriber's sender takes from its queue at once


class Subscriber:
    """One reader of the hub: a bounded queue of JSON texts, optionally of one call only."""

    def __init__(self, queue_size: int, call_id: str | None = None) -> None:
        self.call_id = call_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0  # records lost since the last ``dropped`` notice
        self.dropped_total = 0
        self.in_hand = 0  # records taken from the queue and not sent yet (see :meth:`EventHub.pending`)

    def offer(self, text: str) -> bool:
        """Queue ``text`` without waiting; False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            self.dropped_total += 1
            return False
        return True

    async def next_texts(self) -> list[str]:
        """Wait for the next record; returns it and those queued behind it (at most ``MAX_TAKEN`` in all), preceded
        by a ``dropped`` notice if records were lost: one wake-up of the sending task for what queued meanwhile."""
        queue = self.queue
        texts = [await queue.get()]
        while len(texts) < MAX_TAKEN and not queue.empty():
            texts.append(queue.get_nowait())
        if self.dropped:
            texts.insert(0, _encode({"type": "dropped", "count": self.dropped}))
            self.dropped = 0
        self.in_hand = len(texts)
        return texts

    def sent(self) -> None:
        """The texts of :meth:`next_texts` have been sent."""
        self.in_hand = 0


class EventHub:
    """Fans records out to the subscribers; ``on_drop`` is called once per record a subscriber lost."""

    def __init__(self, queue_size: int, on_drop: Callable[[], None] | None = None) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._on_drop = on_drop
        self._taps: list[Callable[[str, str], None]] = []

    def tap(self, fn: Callable[[str, str], None]) -> None:
        """Also hand every record's JSON text to ``fn(call_id, text)``, subscribers or not (the bus); must not wait."""
        self._taps.append(fn)

    def subscribe(self, call_id: str | None = None) -> Subscriber:
        """A new subscriber to every call's records (or ``call_id``'s only)."""
        sub = Subscriber(self.queue_size, call_id)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def pending(self) -> int:
        """Records queued for (or taken by) the subscribers and not sent yet."""
        return sum(sub.queue.qsize() + sub.in_hand for sub in self._subscribers)

    @property
    def count(self) -> int:
        """Subscribers now."""
        return len(self._subscribers)

    def publish(self, call_id: str, record: dict[str, Any]) -> None:
        """Offer ``record`` (already carrying its ``call_id``) to every interested subscriber; never waits."""
        if self._subscribers or self._taps:
            self.publish_text(call_id, _encode(record))

    def publish_text(self, call_id: str, text: str) -> None:
        """Offer a record already encoded (:meth:`encode`) to every interested subscriber; never waits."""
        for tap in self._taps:
            tap(call_id, text)
        for sub in self._subscribers:
            if (sub.call_id is None or sub.call_id == call_id) and not sub.offer(text) and self._on_drop is not None:
                self._on_drop()

    @staticmethod
    def encode(record: dict[str, Any]) -> str:
        """A record as the JSON text subscribers receive."""
        return _encode(record)
