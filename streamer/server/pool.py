"""Where the calls are analysed: worker processes (default) or threads of the server process.

The event loop only receives and routes audio; every
:class:`~emostream.server.analysis.CallAnalysis` lives in one worker and is used by one request
at a time (a worker process answers its requests in order; with threads a call has one request
under way). :class:`ProcessPool` runs ``[server] workers`` processes, each loading the model
once: the analysis then runs beside the event loop instead of sharing its interpreter lock,
which is what lets two cores carry the calls. A call stays on the worker it was opened on (the
one with the fewest calls). :class:`ThreadPool` (``workers = 0``) keeps the analysis in two
threads of the server process: quicker to start, for tests and a few calls.

Requests (``open``, ``feed``, ``finish``) go to a process on a pipe of their own, written by
the event loop itself without blocking: the requests queued within ``FLUSH_DELAY_S`` (4 ms) of
the first are pickled together into one message (multiprocessing's framing, so the worker reads
them with ``Connection.recv``), and what the pipe cannot take at once is written when it can
(one of the loop's writers). Each message wakes the worker up, and a worker woken for one
request costs far more per request than one that takes several (its caches are cold after a
sleep): calls whose hops fall due together share a message. The event loop reads the replies
from a second pipe (one of its readers) and resolves the awaiting futures. No thread between the loop and the pipe: a
sender thread cost a hand-over of the interpreter lock per request. Two one-way pipes, not
one duplex pipe: an event loop may switch a reader's file to non-blocking mode (uvloop
does), which on a shared pipe made blocking writes fail. A process answers its
requests in the order they were sent, so a call may have several feeds in flight
(:attr:`ProcessPool.ordered`). A worker ignores SIGINT and
SIGTERM (the server drains the calls first and then stops its workers) and exits when its
pipe closes.

A worker that stops (killed, out of memory, a crash in native code) ends its own calls with
an error, and the pool starts a new process in its place (retrying with a growing pause, up
to a minute, if that one cannot start); new calls go to the workers that run meanwhile, and
when none does they are refused with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import struct
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol

from emostream.config import Config
from emostream.engine.events import Event
from emostream.engine.plan import SessionPlan, make_plan
from emostream.errors import EmoStreamError
from emostream.server.analysis import CallAnalysis, CallSpec, Chunk, Published, join_chunks

log = logging.getLogger("emostream.server")
THREADS = 2
START_TIMEOUT_S = 120.0
RESTART_PAUSE_MAX_S = 60.0  # a worker that cannot start again is retried at most this far apart
FLUSH_DELAY_S = 0.004  # requests queued within this long of the first go to the worker in one message (one wake-up)


class AnalysisError(EmoStreamError):
    """A worker refused a request: bad audio, bad settings, or a worker that died."""


class WorkerLostError(AnalysisError):
    """The worker that ran a call stopped: the call's analysis state is gone."""


class NoWorkerError(AnalysisError):
    """No analysis worker runs at the moment (they stopped and are being started again)."""


class AnalysisPool(Protocol):
    """The analysis of every call: open, feed and finish; ``feed_soon`` sends a feed without waiting."""

    ordered: bool

    async def open(self, spec: CallSpec) -> list[dict[str, Any]]: ...

    async def feed(self, call_id: str, chunks: Sequence[Chunk]) -> Published: ...

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[Published]:
        """Send a feed without waiting: the future of its events as published (AnalysisError when refused).
        No task, no coroutine: the call's own callbacks take the reply."""
        ...

    async def finish(self, call_id: str, extra: dict[str, Any], flush: bool) -> tuple[list[Event], dict[str, Any]]: ...

    def close(self) -> None: ...


class ThreadPool:
    """Calls analysed in threads of the server process (``[server] workers = 0``)."""

    ordered = False  # two threads: a call's feeds must wait for each other

    def __init__(self, plan: SessionPlan, bin_s: float) -> None:
        self.plan = plan
        self.bin_s = bin_s
        self._executor = ThreadPoolExecutor(THREADS, thread_name_prefix="emostream-analysis")
        self._calls: dict[str, CallAnalysis] = {}

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except EmoStreamError as exc:
            raise AnalysisError(str(exc)) from exc

    async def open(self, spec: CallSpec) -> list[dict[str, Any]]:
        analysis: CallAnalysis = await self._run(CallAnalysis, self.plan, spec, self.bin_s)
        self._calls[spec.call_id] = analysis
        return analysis.channels

    async def feed(self, call_id: str, chunks: Sequence[Chunk]) -> Published:
        return await self.feed_soon(call_id, chunks)

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[Published]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, _checked_feed, self._calls[call_id], chunks)

    async def finish(self, call_id: str, extra: dict[str, Any], flush: bool) -> tuple[list[Event], dict[str, Any]]:
        analysis = self._calls.pop(call_id)
        result: tuple[list[Event], dict[str, Any]] = await self._run(lambda: analysis.finish(extra, flush=flush))
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _checked_feed(analysis: CallAnalysis, chunks: Sequence[Chunk]) -> Published:
    """``analysis.feed_published(chunks)`` in a thread, its refusals as AnalysisError."""
    try:
        return analysis.feed_published(chunks)
    except EmoStreamError as exc:
        raise AnalysisError(str(exc)) from exc


# ---------------------------------------------------------------- worker processes


def worker_main(requests: Connection, conn: Connection, cfg: Config) -> None:
    """A worker process: load the plan, then serve ``requests`` until told to stop, answering on ``conn``.

    Both directions carry lists (one pipe message per batch): the server sends the requests
    ``(id, kind, call_id, arg)`` that queued up while the previous batch was being written, and
    the worker answers a batch with one list of replies ``(id, ok, result)``. Fewer, larger
    messages: each one costs a pickle, a pipe write and a wake-up on both sides.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        plan = make_plan(cfg)
    except EmoStreamError as exc:
        conn.send([(0, False, str(exc))])
        return
    conn.send([(0, True, None)])
    calls: dict[str, CallAnalysis] = {}
    bin_s = cfg.server.bin_s
    while True:
        try:
            batch = requests.recv()
        except (EOFError, OSError):
            return
        replies: list[tuple[int, bool, Any]] = []
        for request in batch:
            if request[1] == "stop":
                if replies:
                    conn.send(replies)
                return
            replies.append(_answer(calls, plan, bin_s, request))
        conn.send(replies)


def _answer(
    calls: dict[str, CallAnalysis], plan: SessionPlan, bin_s: float, request: tuple[int, str, str, Any]
) -> tuple[int, bool, Any]:
    """One request's reply ``(id, ok, result or message)``."""
    req_id, kind, call_id, arg = request
    try:
        if kind == "open":
            calls[call_id] = CallAnalysis(plan, arg, bin_s)
            result: Any = calls[call_id].channels
        elif kind == "feed":
            result = calls[call_id].feed_published(arg)  # records and their JSON made here, not in the event loop
        else:  # finish
            extra, flush = arg
            result = calls.pop(call_id).finish(extra, flush=flush)
        return req_id, True, result
    except EmoStreamError as exc:
        return req_id, False, str(exc)
    except Exception as exc:  # a bug: the call ends with the message, the worker goes on
        traceback.print_exc()
        return req_id, False, f"internal error in the analysis: {type(exc).__name__}: {exc}"


class _Worker:
    """One worker process seen from the server: a request queue, a sender and a receiver thread."""

    def __init__(
        self,
        index: int,
        cfg: Config,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[_Worker], None] | None = None,
    ) -> None:
        mp = multiprocessing.get_context("spawn")
        child_requests, self._requests = mp.Pipe(duplex=False)  # server -> worker
        self.conn, child_replies = mp.Pipe(duplex=False)  # worker -> server
        self.process = mp.Process(
            target=worker_main, args=(child_requests, child_replies, cfg), name=f"emostream-worker-{index}", daemon=True
        )
        self.process.start()
        child_requests.close()
        child_replies.close()
        self.index = index
        self.calls = 0
        self._on_lost_cb = on_lost
        self._loop = loop
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._batch: list[tuple[Any, ...]] = []  # requests of the last FLUSH_DELAY_S, not pickled yet
        self._unsent = bytearray()  # framed requests the pipe has not taken yet
        self._writing = False  # the loop waits for the pipe to take more (a writer is registered)
        self._io_closed = threading.Event()
        self._loop_thread = threading.get_ident()
        self.ready = asyncio.Event()
        self.start_error: str | None = None
        self.ready_once = False  # it loaded the model and took calls (a loss is then restarted)
        self.dead = False
        self._wfd = self._requests.fileno()
        os.set_blocking(self._wfd, False)  # the loop writes what the pipe takes and waits for the rest
        loop.add_reader(self.conn.fileno(), self._on_readable)  # replies are read by the event loop itself
        os.set_blocking(self.conn.fileno(), True)  # read only when ready, but a reply is read whole

    def _queue(self, request: tuple[Any, ...]) -> None:
        """Queue a request (event loop side); the requests of the next ``FLUSH_DELAY_S`` go in one message."""
        if not self._batch:
            self._loop.call_later(FLUSH_DELAY_S, self._flush)
        self._batch.append(request)

    def _flush(self) -> None:
        """Pickle the queued requests into one message, framed as ``Connection.send`` frames it, and write."""
        batch, self._batch = self._batch, []
        if self.dead or not batch:
            return
        data = ForkingPickler.dumps(batch)
        n = len(data)
        self._unsent += struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
        self._unsent += data
        if not self._writing:
            self._write()

    def _write(self) -> None:
        """Write what the pipe takes; wait (a writer of the loop) for the rest. A closed pipe: the worker is lost."""
        unsent = self._unsent
        try:
            while unsent:
                del unsent[: os.write(self._wfd, unsent)]
        except BlockingIOError:
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._wfd, self._write)
            return
        except OSError as exc:  # the worker is gone: its calls end with an error
            log.error("analysis worker %d: cannot send a request (%s)", self.index, exc)
            self._on_lost()
            return
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._wfd)

    def _on_lost(self) -> None:
        if not self.dead:
            self.dead = True
            self._loop.remove_reader(self.conn.fileno())
            self._stop_writing()
            self.ready.set()
            self._fail_all()
            if self._on_lost_cb is not None:
                self._on_lost_cb(self)

    def _on_readable(self) -> None:
        """One batch of replies (the loop calls again while the pipe holds more: its readers are level-triggered;
        ``Connection.poll`` would build a selector per call)."""
        try:
            replies = self.conn.recv()
        except (EOFError, OSError):
            self._on_lost()
            return
        for req_id, ok, result in replies:
            if req_id == 0:
                self.start_error = None if ok else str(result)
                self.ready.set()
            else:
                self._resolve(req_id, ok, result)

    def _resolve(self, req_id: int, ok: bool, result: Any) -> None:
        future = self._pending.pop(req_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(result)
        else:
            future.set_exception(AnalysisError(str(result)))

    def _fail_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerLostError(f"analysis worker {self.index} stopped"))
        self._pending.clear()

    async def request(self, kind: str, call_id: str, arg: Any) -> Any:
        return await self.submit(kind, call_id, arg)

    def submit(self, kind: str, call_id: str, arg: Any) -> asyncio.Future[Any]:
        """Queue a request (event loop side); the future of its reply (WorkerLostError once the worker stopped)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.dead:
            future.set_exception(WorkerLostError(f"analysis worker {self.index} stopped"))
            return future
        req_id = next(self._ids)
        self._pending[req_id] = future
        self._queue((req_id, kind, call_id, arg))
        return future

    def _stop_writing(self) -> None:
        """Event loop side: no more writes; what is unsent is dropped."""
        self._unsent.clear()
        self._batch.clear()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._wfd)

    def _close_io(self) -> None:
        """Event loop side: stop reading and writing and close the request pipe (the worker then exits)."""
        if not self.dead:
            self._loop.remove_reader(self.conn.fileno())
        self._stop_writing()
        self._requests.close()
        self._io_closed.set()

    def stop(self, timeout_s: float) -> None:
        """Stop the process (from any thread): its request pipe is closed, it exits at the end of that pipe."""
        if threading.get_ident() == self._loop_thread or self._loop.is_closed():
            self._close_io()
        else:
            try:
                self._loop.call_soon_threadsafe(self._close_io)
            except RuntimeError:  # the loop has closed meanwhile
                self._close_io()
            self._io_closed.wait(timeout_s)
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
        self.conn.close()
        self._requests.close()


class ProcessPool:
    """Calls analysed in ``n`` worker processes; construct it in the running loop, then :meth:`wait_ready`.

    ``on_restart``: called (in the event loop) each time a stopped worker has been replaced.
    """

    ordered = True  # a call's requests are answered in the order sent: feeds need not wait for each other

    def __init__(self, cfg: Config, n: int, on_restart: Callable[[], None] | None = None) -> None:
        self._cfg = cfg
        self._loop = asyncio.get_running_loop()
        self._on_restart = on_restart
        self._closing = False
        self._restarting: set[asyncio.Task[None]] = set()
        self._workers = [self._new_worker(i) for i in range(n)]
        self._home: dict[str, _Worker] = {}

    def _new_worker(self, index: int) -> _Worker:
        return _Worker(index, self._cfg, self._loop, on_lost=self._lost)

    @property
    def running(self) -> int:
        """Workers that are up (a stopped one being replaced is not)."""
        return sum(not w.dead for w in self._workers)

    async def wait_ready(self) -> None:
        """Wait until every worker has loaded the model; AnalysisError when one cannot."""
        for worker in self._workers:
            problem = await _started(worker)
            if problem:
                raise AnalysisError(f"analysis worker {worker.index} did not start: {problem}")

    def _lost(self, worker: _Worker) -> None:
        """A worker stopped (event loop side): its calls have failed; start another in its place."""
        if self._closing or self._workers[worker.index] is not worker or not worker.ready_once:
            return
        task = self._loop.create_task(self._replace(worker, worker.calls), name=f"restart-worker-{worker.index}")
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _replace(self, old: _Worker, calls: int) -> None:
        # reap the process first (its lost pipe can be seen before it has exited): the log gives its exit code
        await self._loop.run_in_executor(None, old.stop, 1.0)
        log.error(
            "analysis worker %d stopped (exit code %s); its %d call(s) end with an error; starting it again",
            old.index,
            old.process.exitcode,
            calls,
        )
        pause_s = 1.0
        while not self._closing:
            new = self._new_worker(old.index)
            problem = await _started(new)
            if not problem and not self._closing:
                self._workers[old.index] = new
                log.warning("analysis worker %d started again", old.index)
                if self._on_restart is not None:
                    self._on_restart()
                return
            await self._loop.run_in_executor(None, new.stop, 1.0)
            if self._closing:
                return
            log.error("analysis worker %d did not start again (%s); next try in %g s", old.index, problem, pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, RESTART_PAUSE_MAX_S)

    async def open(self, spec: CallSpec) -> list[dict[str, Any]]:
        live = [w for w in self._workers if not w.dead]
        if not live:
            raise NoWorkerError("no analysis worker is running (they stopped and are being started again)")
        worker = min(live, key=lambda w: w.calls)
        worker.calls += 1  # before the reply: calls opened at the same moment spread over the workers
        try:
            channels: list[dict[str, Any]] = await worker.request("open", spec.call_id, spec)
        except BaseException:
            worker.calls -= 1
            raise
        self._home[spec.call_id] = worker
        return channels

    async def feed(self, call_id: str, chunks: Sequence[Chunk]) -> Published:
        return await self.feed_soon(call_id, chunks)

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[Published]:
        future: asyncio.Future[Published] = self._home[call_id].submit("feed", call_id, joined(chunks))
        return future

    async def finish(self, call_id: str, extra: dict[str, Any], flush: bool) -> tuple[list[Event], dict[str, Any]]:
        worker = self._home.pop(call_id)
        worker.calls -= 1
        result: tuple[list[Event], dict[str, Any]] = await worker.request("finish", call_id, (extra, flush))
        return result

    def close(self) -> None:
        self._closing = True  # a worker that exits now is not started again
        for worker in self._workers:
            worker.stop(5.0)


def joined(chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks of one request as one chunk (the analysis decodes the same samples): one byte string per track
    instead of two per 20 ms message, so pickling and unpickling a request handles a few objects, not dozens."""
    if len(chunks) < 2:
        return list(chunks)
    first = chunks[0]
    return [join_chunks(chunks, len(first) if isinstance(first, tuple) else None)]


async def _started(worker: _Worker) -> str | None:
    """Wait for ``worker`` to load the model: None when it is ready, else why not."""
    try:
        await asyncio.wait_for(worker.ready.wait(), START_TIMEOUT_S)
    except TimeoutError:
        worker.start_error = f"no reply within {START_TIMEOUT_S:g} s"
    if worker.dead or worker.start_error:
        return worker.start_error or "it stopped while loading"
    worker.ready_once = True
    return None
