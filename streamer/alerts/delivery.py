"""Delivery of alert events to a command and/or an HTTP webhook, never blocking the audio path.

:class:`AlertDispatcher` hands events to an optional command (the alert JSON on stdin)
and/or an HTTP webhook (JSON POST) from one worker thread behind a bounded queue:
``submit()`` never blocks (a full queue drops the event and counts it), and delivery
failures are logged and counted, never raised into the audio path. :class:`AlertDelivery`
is the observer of the event stream that submits each alert event.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import shlex
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from emostream.alerts.rules import AlertEvent
from emostream.errors import InvalidSettingError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AlertOutput:
    """Where fired alerts go besides the JSONL stream.

    ``command``: program run per alert with the alert JSON on stdin (a string is split
    shell-style, no shell is used); ``webhook``: http(s) URL receiving a JSON POST;
    ``timeout_s`` per attempt; ``retries`` extra attempts after a failure, waiting
    ``backoff_s * 2**k`` between them; ``queue_size`` alerts waiting at most (more are
    dropped and counted); ``notify_clear`` also delivers ``cleared`` events.
    """

    command: str | tuple[str, ...] | None = None
    webhook: str | None = None
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    queue_size: int = 100
    notify_clear: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                self.webhook is None or self.webhook.startswith(("http://", "https://")),
                "webhook",
                f"is {self.webhook!r}; expected an http:// or https:// URL",
            ),
            (self.timeout_s > 0, "timeout_s", f"is {self.timeout_s}; expected more than 0 s"),
            (0 <= self.retries <= 10, "retries", f"is {self.retries}; expected 0 to 10"),
            (self.backoff_s >= 0, "backoff_s", f"is {self.backoff_s}; expected 0 s or more"),
            (1 <= self.queue_size <= 100000, "queue_size", f"is {self.queue_size}; expected 1 to 100000"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise InvalidSettingError(key, message)

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to deliver alerts."""
        return bool(self.command) or self.webhook is not None

    def argv(self) -> list[str] | None:
        """The command as an argument list, or None."""
        if not self.command:
            return None
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


@dataclass
class DispatchStats:
    """Counters of an :class:`AlertDispatcher` (read them after ``close()`` for exact values)."""

    submitted: int = 0
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


_STOP = object()


class AlertDispatcher:
    """Delivers alert events from a bounded queue on one daemon worker thread."""

    def __init__(self, output: AlertOutput) -> None:
        self.output = output
        self.stats = DispatchStats()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=output.queue_size)
        self._abort = threading.Event()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._worker.start()

    def submit(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery without blocking; False if it was dropped (queue full or closed)."""
        if self._closed or (event.state == "cleared" and not self.output.notify_clear):
            return False
        self.stats.submitted += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:  # no log flood in the audio path
                log.warning(
                    "alert queue full (%d): dropped %s alert on channel %d (%d dropped so far)",
                    self.output.queue_size,
                    event.rule,
                    event.channel,
                    self.stats.dropped,
                )
            return False
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` s; True if the worker finished."""
        if not self._closed:
            self._closed = True
            self._put_stop(timeout)
        self._worker.join(timeout)
        if self._worker.is_alive():
            self._abort.set()  # give up pending retries; the daemon thread ends after its current attempt
            return False
        return True

    def _put_stop(self, timeout: float) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self._abort.set()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._abort.is_set():
                return
            if isinstance(item, AlertEvent):
                self._deliver(item)

    def _deliver(self, event: AlertEvent) -> None:
        body = json.dumps(event.to_dict()).encode("utf-8")
        targets: list[tuple[str, Callable[[], None]]] = []
        argv = self.output.argv()
        if argv:
            targets.append(("command", lambda: self._run_command(argv, body)))
        if self.output.webhook is not None:
            url = self.output.webhook
            targets.append(("webhook", lambda: self._post(url, body)))
        ok = all([self._with_retries(name, action) for name, action in targets])
        if ok:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1

    def _with_retries(self, name: str, action: Callable[[], None]) -> bool:
        for attempt in range(self.output.retries + 1):
            if attempt and self._abort.wait(self.output.backoff_s * 2 ** (attempt - 1)):
                return False
            self.stats.attempts += 1
            try:
                action()
                return True
            except (OSError, http.client.HTTPException, subprocess.SubprocessError, ValueError) as exc:
                message = f"alert {name} attempt {attempt + 1}/{self.output.retries + 1} failed: {exc}"
                log.warning(message)
                self.stats.errors = [*self.stats.errors[-9:], message]
        return False

    def _run_command(self, argv: Sequence[str], body: bytes) -> None:
        subprocess.run(argv, input=body, timeout=self.output.timeout_s, check=True, capture_output=True)

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "emostream"}
        )
        with urllib.request.urlopen(request, timeout=self.output.timeout_s) as response:
            response.read()


class AlertDelivery:
    """Observer of the event stream: submits every :class:`AlertEvent` to a dispatcher.

    ``close()`` waits (at most ``timeout`` s) for queued deliveries and returns the
    dispatcher's counters; it never raises.
    """

    def __init__(self, output: AlertOutput) -> None:
        self.dispatcher = AlertDispatcher(output)

    def on_event(self, event: object) -> None:
        """Submit alert events; ignore everything else."""
        if isinstance(event, AlertEvent):
            self.dispatcher.submit(event)

    def on_end(self, summary: object) -> None:
        """The session ended: deliver what is queued (see :meth:`close`)."""
        self.close()

    def close(self, timeout: float = 5.0) -> DispatchStats:
        """Deliver what is queued (at most ``timeout`` s) and log a line when anything was lost."""
        finished = self.dispatcher.close(timeout)
        stats = self.dispatcher.stats
        if not finished or stats.dropped or stats.failed:
            log.warning(
                "alert delivery: %d delivered, %d failed, %d dropped (queue full)%s",
                stats.delivered,
                stats.failed,
                stats.dropped,
                "" if finished else ", gave up waiting for the rest",
            )
        return stats
