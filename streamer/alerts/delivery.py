"""Delivery of alert events to a command and/or an HTTP webhook, never blocking the audio path.

:class:`AlertDispatcher` hands events to an optional command (the alert JSON on stdin)
and/or an HTTP webhook (JSON POST) from one worker thread behind a bounded queue:
``submit()`` never blocks (a full queue drops the event and counts it), and delivery
failures are counted (and logged at INFO level only: a warning on stderr would draw over
the live dashboard), never raised into the audio path. :class:`AlertDelivery` is the
observer of the event stream that submits each alert event; it checks at start-up that
the command exists (:class:`~emostream.errors.ConfigError`, exit 2), shows problems as
dashboard messages and reports delivered / failed / dropped / still pending counts for
the session summary (the ``end`` record and the printed summary).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import shlex
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from emostream.alerts.rules import AlertEvent
from emostream.errors import ConfigError, InvalidSettingError

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

    @property
    def pending(self) -> int:
        """Submitted alerts neither delivered, failed nor dropped (still queued or being tried)."""
        return max(0, self.submitted - self.dropped - self.delivered - self.failed)

    def counts(self) -> dict[str, int]:
        """The summary's ``alert_delivery`` figures."""
        return {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped, "pending": self.pending}


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
                log.info(
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
            except (OSError, WebhookError, subprocess.SubprocessError, ValueError) as exc:
                message = f"alert {name} attempt {attempt + 1}/{self.output.retries + 1} failed: {exc}"
                log.info(message)
                self.stats.errors = [*self.stats.errors[-9:], message]
        return False

    def _run_command(self, argv: Sequence[str], body: bytes) -> None:
        subprocess.run(argv, input=body, timeout=self.output.timeout_s, check=True, capture_output=True)

    def _post(self, url: str, body: bytes) -> None:
        post_json(url, body, self.output.timeout_s)


MAX_ANSWER_BYTES = 65536  # a webhook's answer body is read (and ignored) up to this much


class WebhookError(Exception):
    """A webhook answered with a status of 300 or more, or not in HTTP (retried like any failure)."""


def post_json(url: str, body: bytes, timeout_s: float) -> None:
    """POST ``body`` (JSON) to ``url``; the whole exchange must end within ``timeout_s`` (else TimeoutError).

    ``timeout_s`` bounds the request as a whole, not each socket operation: a server that
    answers one byte every few seconds cannot hold the delivery thread. An answer of 300 or
    more, or one that is not HTTP, raises :class:`WebhookError` (retried like any failure).
    ``http.client`` (and with it ``email``) is imported here, on the first delivery, not when
    every run of the CLI imports this module.
    """
    import http.client  # noqa: PLC0415  (about 40 ms of start-up that a run without webhooks never needs)

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout_s)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
    expired = threading.Event()

    def cut() -> None:  # wakes a blocked send or receive at once
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout_s, cut)
    timer.daemon = True
    timer.start()
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {"Content-Type": "application/json", "User-Agent": "emostream"}
        if parts.username is not None:
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_ANSWER_BYTES)
        if response.status >= 300:
            raise WebhookError(f"HTTP Error {response.status}: {response.reason}")
    except (OSError, http.client.HTTPException, WebhookError) as exc:
        if expired.is_set():
            raise TimeoutError(f"timed out: no complete answer within {timeout_s:g} s") from None
        if isinstance(exc, http.client.HTTPException):
            raise WebhookError(f"not an HTTP answer: {exc!r}") from exc
        raise
    finally:
        timer.cancel()
        conn.close()


class AlertDelivery:
    """Observer of the event stream: submits every :class:`AlertEvent` to a dispatcher.

    The constructor refuses a command that cannot be found (:class:`ConfigError`, exit 2).
    :meth:`settle` (the engine calls it before it builds the session summary) waits at
    most ``timeout`` s for queued deliveries and returns the counts; it never raises.
    """

    def __init__(self, output: AlertOutput, settle_timeout_s: float = 5.0) -> None:
        check_command(output)
        self.output = output
        self.settle_timeout_s = settle_timeout_s
        self.dispatcher = AlertDispatcher(output)
        self._settled: DispatchStats | None = None

    def on_event(self, event: object) -> None:
        """Submit alert events; ignore everything else."""
        if isinstance(event, AlertEvent):
            self.dispatcher.submit(event)

    @property
    def messages(self) -> list[str]:
        """Problems so far, one line for the dashboard (empty while all is well)."""
        stats = self.dispatcher.stats
        if not (stats.failed or stats.dropped or stats.errors):
            return []
        last = f"; last: {stats.errors[-1]}" if stats.errors else ""
        return [
            f"alert delivery: {stats.delivered} delivered, {stats.failed} failed, {stats.dropped} dropped, "
            f"{stats.pending} pending{last}"
        ]

    def settle(self) -> dict[str, int]:
        """Deliver what is queued (at most ``settle_timeout_s``) and return the summary's counts."""
        return self.close(self.settle_timeout_s).counts()

    def on_end(self, summary: object) -> None:
        """The session ended: deliver what is queued (a no-op after :meth:`settle`)."""
        self.close(self.settle_timeout_s)

    def close(self, timeout: float = 5.0) -> DispatchStats:
        """Deliver what is queued, waiting at most ``timeout`` s; later calls return the same counts."""
        if self._settled is None:
            self.dispatcher.close(timeout)
            stats = self.dispatcher.stats
            self._settled = DispatchStats(
                submitted=stats.submitted,
                dropped=stats.dropped,
                delivered=stats.delivered,
                failed=stats.failed,
                attempts=stats.attempts,
                errors=list(stats.errors),
            )
        return self._settled


def check_command(output: AlertOutput) -> None:
    """Refuse (exit 2) an alert command whose program is not found or not executable."""
    argv = output.argv()
    if not argv:
        return
    program = argv[0]
    if shutil.which(program) is None:
        raise ConfigError(
            f"[alerts_output] command: the program {program!r} is not found or not executable; "
            "give an existing program (a full path, or a name on PATH)"
        )
