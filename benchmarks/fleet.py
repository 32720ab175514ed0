"""A whole fleet on 127.0.0.1, for the fleet test and ``python -m benchmarks --only fleet``.

Starts Debian's ``redis-server`` (the bus: append-only file, so a restart keeps the stream),
``emostream serve`` replicas publishing to it, ``haproxy`` in front of them (WebSocket,
least connections, health checks on ``/healthz``: the ``haproxy.cfg`` of docs/scaling.md)
and ``emostream serve --supervisor``, each on a free port with a temporary folder. Then
streams Twilio-format calls (the load generator of :mod:`benchmarks.bench_serve`: pre-built
masked frames, paced in real time) through HAProxy, while one ``/events`` client of the
supervisor reads every record; it can restart the broker and SIGKILL a replica mid-run, and
reports what the supervisor saw (:class:`FleetRun`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_serve import (
    TOKEN,
    call_audio,
    drain,
    open_ws,
    parse_metrics,
    prepare,
    proc_cpu_s,
    ws_frame,
)

FRAME_S = 0.02
TICK_S = 0.005
BINARIES = ("redis-server", "haproxy")


def missing_binaries() -> list[str]:
    """The Debian programs the fleet needs that are not installed (``.ci/setup dev`` installs them)."""
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_cfg(port: int, replicas: dict[str, int], max_calls: int) -> str:
    """The balancer of docs/scaling.md: WebSocket upgrades, least connections, /healthz checks, long tunnels."""
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{p} check inter 1s fall 2 rise 2 maxconn {max_calls}"
        for name, p in replicas.items()
    )
    return f"""global
    maxconn 4000

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 10s
    timeout http-request 10s

frontend calls
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect rstring status.:.ok
{servers}
"""


def wait_port(port: int, proc: subprocess.Popen[Any], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


def http_get(port: int, path: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def metrics(port: int) -> dict[str, float]:
    return parse_metrics(http_get(port, "/metrics"))


@dataclass
class Fleet:
    """The processes of one fleet on 127.0.0.1 (see the module docstring)."""

    folder: Path
    model: str = "fast"
    replicas: int = 2
    workers: int = 1
    max_backlog_s: float = 2.0  # [server] max_backlog_s of the replicas
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def bus_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    def start(self) -> None:
        self.ports["redis"] = free_port()
        self.start_redis()
        names = [f"r{i + 1}" for i in range(self.replicas)]
        for name in names:
            self.start_serve(name, ["--bus", self.bus_url, "--replica", name, "--workers", str(self.workers)])
        self.start_serve("supervisor", ["--supervisor", "--bus", self.bus_url])
        self.ports["haproxy"] = free_port()
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(haproxy_cfg(self.ports["haproxy"], {n: self.ports[n] for n in names}, 200), encoding="utf-8")
        check = subprocess.run(
            [binary("haproxy"), "-c", "-q", "-f", str(cfg)], check=False, capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the config: {check.stderr or check.stdout}")
        self._spawn("haproxy", [binary("haproxy"), "-db", "-f", str(cfg)])
        wait_port(self.ports["haproxy"], self.procs["haproxy"], "haproxy")
        self.wait_backends_up(names)

    def wait_backends_up(self, names: list[str], timeout_s: float = 20.0) -> None:
        """Until haproxy's health checks have passed (a request through it reaches a replica)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if '"ok"' in http_get(self.ports["haproxy"], "/healthz"):
                    return
            time.sleep(0.2)
        raise RuntimeError("haproxy found no healthy replica")

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, *, banner: bool = False
    ) -> subprocess.Popen[Any]:
        """Start ``cmd`` in its own process group, stderr (and stdout unless ``banner``) to ``name``.log."""
        log = (self.folder / f"{name}.log").open("a", encoding="utf-8")
        out = subprocess.PIPE if banner else log
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=log, text=True, env=env, start_new_session=True, cwd=self.folder
        )
        self.procs[name] = proc
        return proc

    def start_redis(self) -> None:
        port = self.ports["redis"]
        cmd = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        cmd += ["--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
        proc = self._spawn("redis", cmd)
        wait_port(port, proc, "redis-server")

    def restart_redis(self) -> float:
        """SIGTERM the broker (it writes its append-only file), start it again; returns the outage in seconds."""
        proc = self.procs["redis"]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        self.start_redis()
        return time.monotonic() - t0

    def start_serve(self, name: str, extra: list[str]) -> None:
        env = {**os.environ, "EMOSTREAM_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
        config = self.folder / f"{name}.toml"
        settings = f"max_calls = 200\nidle_timeout_s = 60.0\nmax_backlog_s = {self.max_backlog_s}\n"
        config.write_text(f"[server]\n{settings}", encoding="utf-8")
        cmd = [sys.executable, "-m", "emostream", "serve", "--port", "0", "--model", self.model]
        cmd += ["--config", str(config)]
        proc = self._spawn(name, [*cmd, *extra], env, banner=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RuntimeError(f"emostream serve {name} did not start: {line!r}; see {self.folder / name}.log")
        self.ports[name] = int(found.group(1))

    def kill(self, name: str) -> None:
        """SIGKILL a replica and its analysis workers (its process group): a crash, no drain."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def cpu_s(self, name: str) -> float:
        """User + system CPU seconds of a process and its children so far."""
        return proc_cpu_s(self.procs[name].pid)

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
            del name


@dataclass
class Watcher:
    """The supervisor's ``/events`` as a page sees it: every call, its replica, hops, ends; hop delays."""

    started: dict[str, str] = field(default_factory=dict)  # call_id -> replica
    hops: dict[str, int] = field(default_factory=dict)
    readings: dict[str, int] = field(default_factory=dict)  # hops with an emotion or scores
    ended: dict[str, tuple[float, str]] = field(default_factory=dict)  # call_id -> (monotonic time, reason)
    delays_s: list[tuple[str, float]] = field(default_factory=list)  # (replica, delay) of every hop
    last_hop_at: dict[str, float] = field(default_factory=dict)  # replica -> monotonic time of its last hop
    hops_after: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, replica) of every hop
    snapshot_calls: int = 0
    arrivals: dict[tuple[Any, ...], float] = field(default_factory=dict)  # (call, channel, t_end) -> monotonic time

    def take(self, record: dict[str, Any], now: float, wall: float) -> None:
        """One record of ``/events``, received at ``now`` (monotonic) and ``wall`` (wall clock)."""
        kind = record.get("type")
        if kind == "snapshot":
            self.snapshot_calls = len(record.get("calls") or [])
            for info in record.get("calls") or []:
                self.started.setdefault(info["call_id"], info.get("replica", ""))
        elif kind == "call_start":
            self.started[record["call_id"]] = record.get("replica", "")
        elif kind == "hop":
            call_id = record["call_id"]
            replica = record.get("replica", "")
            self.started.setdefault(call_id, replica)
            self.hops[call_id] = self.hops.get(call_id, 0) + 1
            if record.get("scores") is not None:
                self.readings[call_id] = self.readings.get(call_id, 0) + 1
            if record.get("time"):
                made = datetime.fromisoformat(record["time"]).timestamp()
                self.delays_s.append((replica, wall - made))
            self.last_hop_at[replica] = now
            self.hops_after.append((now, replica))
            self.arrivals[(call_id, record.get("channel"), record.get("t_end"))] = now
        elif kind == "call_end":
            reason = str((record.get("summary") or {}).get("end_reason", ""))
            self.ended[record["call_id"]] = (now, reason)

    def read(self, path: Path) -> None:
        """Take the records :func:`follow` wrote to ``path``."""
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                received = json.loads(line)
                self.take(received["m"], received["t"], received["w"])

    def quantile_ms(self, q: float, replica: str | None = None) -> float | None:
        """The q-quantile of the hop delays (of ``replica``'s hops only, if given)."""
        delays = sorted(d for r, d in self.delays_s if replica is None or r == replica)
        if not delays:
            return None
        return round(1000 * delays[min(len(delays) - 1, int(q * len(delays)))], 1)


async def follow(port: int, out: Path) -> None:
    """The supervisor's ``/events`` client: every message, with its arrival times, one JSON line each in ``out``.

    Run in a process of its own (``python -m benchmarks.fleet follow PORT OUT``), so that the
    load generator's loop does not delay the reading of the records whose delay it measures.
    """
    import websockets

    url = f"ws://127.0.0.1:{port}/events"
    with out.open("w", encoding="utf-8") as sink:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            async for message in ws:
                now, wall = time.monotonic(), time.time()
                sink.write(f'{{"t":{now},"w":{wall},"m":{message}}}\n')
                sink.flush()


@dataclass
class Streamer:
    """Twilio-format calls through one port, paced in real time; ``sent`` frames and ``lost`` connections per call."""

    port: int
    n_calls: int
    seconds: float
    arrivals_per_s: float = 10.0
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)  # each call's reader, answering pings
    sids: list[str] = field(default_factory=list)
    cut: set[int] = field(default_factory=set)  # calls whose connection was closed under them
    max_lag_s: float = 0.0  # the longest this client fell behind the real-time pace (then sent a burst)

    async def run(self) -> None:
        head, frames, stop = prepare(call_audio(self.seconds + self.n_calls / self.arrivals_per_s + 2.0))
        loop = asyncio.get_running_loop()
        offsets = [i / self.arrivals_per_s for i in range(self.n_calls)]
        n_frames = int(self.seconds / FRAME_S)
        t0 = loop.time()
        sent = [0] * self.n_calls
        opened = 0
        while True:
            now = loop.time()
            while opened < self.n_calls and now >= t0 + offsets[opened]:
                reader, writer = await open_ws(self.port, "/twilio")
                sid = f"MZfleet{opened:04d}{os.getpid() % 10000:04d}"
                start = head[1].replace('"MZbench"', f'"{sid}"')
                writer.write(ws_frame(head[0].encode()) + ws_frame(start.encode()))
                self.conns.append((reader, writer))
                self.readers.append(loop.create_task(drain(reader, writer)))  # pongs to the keepalive pings
                self.sids.append(sid)
                opened += 1
            busy = opened < self.n_calls
            for i, (reader, writer) in enumerate(self.conns):
                if i in self.cut:
                    continue
                if writer.is_closing() or reader.at_eof():
                    self.cut.add(i)
                    continue
                due = min(n_frames, int((now - t0 - offsets[i]) / FRAME_S) + 1)
                self.max_lag_s = max(self.max_lag_s, (due - sent[i]) * FRAME_S)
                while sent[i] < due:
                    writer.write(frames[sent[i]])
                    sent[i] += 1
                busy = busy or sent[i] < n_frames
            if not busy:
                break
            await asyncio.sleep(TICK_S)
        for i, (reader, writer) in enumerate(self.conns):
            if writer.is_closing() or reader.at_eof():
                self.cut.add(i)
            else:
                writer.write(stop)
        await asyncio.sleep(1.0)
        for task in self.readers:
            task.cancel()
        for _, writer in self.conns:
            writer.close()


def fleet_metrics_totals(fleet: Fleet, names: list[str]) -> dict[str, dict[str, float]]:
    """Each named server's /metrics (those still running)."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        if fleet.procs[name].poll() is None:
            out[name] = metrics(fleet.ports[name])
    return out


def dropped_audio_s(values: dict[str, float]) -> float:
    return values.get("emostream_dropped_audio_seconds_total", 0.0)


def total(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


@dataclass
class FleetRun:
    """What one run measured (see :func:`run_fleet`)."""

    calls: int
    seen: int  # calls the supervisor showed
    with_readings: int  # of those, calls with at least one reading (a hop with scores)
    p99_ms: float | None  # hop delay, computed on a replica -> a client of the supervisor's /events
    p50_ms: float | None
    p99_r1_ms: float | None  # the same for r1's hops only (for the peer below)
    p99_r1_direct_ms: float | None  # r1's hops read from r1's own /events, without the bus: the peer
    bus_added_p99_ms: float | None  # the same hop at the supervisor's /events client minus at r1's own
    bus_added_p50_ms: float | None
    supervisor_delay_p99_ms: float | None  # emostream_bus_delay_seconds: from a replica's queue to the fan-out
    broker_outage_s: float | None
    audio_dropped_s: float  # on the replicas (emostream_dropped_audio_seconds_total), the killed one's last scrape
    bus_dropped: float  # records the replicas dropped (emostream_bus_dropped_total)
    bus_missing: float  # records the supervisor never received (gaps in the sequence)
    hops_after_restart: int  # hop records on the supervisor after the broker came back
    killed: str | None
    killed_calls: int
    kill_to_ended_s: float | None  # SIGKILL to the last of its calls shown ended on the supervisor
    kill_reasons: list[str]
    others_cut: int  # calls of the other replicas whose connection was closed under them
    others_ended_early: int  # calls of the other replicas shown ended before they stopped
    others_hops_after_kill: int
    replica_cpu_s: float  # the surviving replicas (and their workers) over the run
    worker_cpu_s: float  # their analysis workers only
    call_seconds: float  # audio streamed to the surviving replicas
    records_per_call_s: float  # bus records per call-second on a surviving replica
    supervisor_cpu_per_record_us: float  # the supervisor's CPU per bus record it took (read, parse, fan-out)
    client_max_lag_s: float  # the load client's longest delay behind real time (a burst the replicas must absorb)
    wall_s: float
    notes: list[str] = field(default_factory=list)


def _added_ms(via_bus: Watcher, direct: Watcher, q: float) -> float | None:
    """The q-quantile of how much later a hop reached the supervisor's client than r1's own client (ms)."""
    added = sorted(t - direct.arrivals[key] for key, t in via_bus.arrivals.items() if key in direct.arrivals)
    return round(1000 * added[min(len(added) - 1, int(q * len(added)))], 1) if added else None


def children_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s child processes only (a server's analysis workers)."""
    return proc_cpu_s(pid) - _own_cpu_s(pid)


def _own_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Observed:
    """The raw observations of one run, before :func:`summarise`."""

    watcher: Watcher
    streamer: Streamer
    survivors: list[str]
    seconds: float
    t0: float = 0.0
    started: float = 0.0
    outage_s: float | None = None
    restored_at: float | None = None
    killed_at: float | None = None
    killed_scrape: dict[str, dict[str, float]] = field(default_factory=dict)
    end_scrape: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    supervisor_delay_p99_ms: float | None = None
    direct: Watcher = field(default_factory=Watcher)  # r1's own /events
    supervisor_cpu_s: float = 0.0


async def run_fleet(
    folder: Path,
    *,
    calls: int = 40,
    seconds: float = 30.0,
    model: str = "fast",
    workers: int = 1,
    restart_broker_at_s: float | None = 10.0,
    kill_at_s: float | None = 18.0,
    max_backlog_s: float = 2.0,
) -> FleetRun:
    """Start a fleet in ``folder``, stream ``calls`` calls of ``seconds`` s through HAProxy, restart the broker
    and SIGKILL replica r2 at the given times (since the first call), and measure what the supervisor shows."""
    fleet = Fleet(folder, model=model, workers=workers, max_backlog_s=max_backlog_s)
    survivors = ["r1"] if kill_at_s is not None else ["r1", "r2"]
    seen = Observed(Watcher(), Streamer(0, calls, seconds), survivors, seconds, started=time.monotonic())
    try:
        fleet.start()  # inside the try: what did start is stopped when a later part fails
        # the supervisor's /events, and r1's own (the same hops without the bus: the peer of the delay figure)
        followers = {
            name: subprocess.Popen(
                [sys.executable, "-m", "benchmarks.fleet", "follow", str(fleet.ports[name]), str(out)],
                cwd=Path(__file__).resolve().parent.parent,
            )
            for name, out in (("supervisor", folder / "events.jsonl"), ("r1", folder / "events-r1.jsonl"))
        }
        await asyncio.sleep(1.0)
        seen.streamer.port = fleet.ports["haproxy"]
        cpu0 = {n: fleet.cpu_s(n) for n in [*survivors, "supervisor"]}
        work0 = {n: children_cpu_s(fleet.procs[n].pid) for n in survivors}
        seen.t0 = time.monotonic()
        streaming = asyncio.get_running_loop().create_task(seen.streamer.run())
        steps = [(t, kind) for t, kind in ((restart_broker_at_s, "restart"), (kill_at_s, "kill")) if t is not None]
        for at, kind in sorted(steps):
            await asyncio.sleep(max(0.0, seen.t0 + at - time.monotonic()))
            if kind == "restart":
                seen.outage_s = await asyncio.to_thread(fleet.restart_redis)
                seen.restored_at = time.monotonic()
            else:
                seen.killed_scrape = await asyncio.to_thread(fleet_metrics_totals, fleet, ["r2"])
                seen.killed_at = time.monotonic()
                await asyncio.to_thread(fleet.kill, "r2")
        await streaming
        await asyncio.sleep(2.0)  # the last records and call_ends reach the supervisor
        seen.end_scrape = await asyncio.to_thread(fleet_metrics_totals, fleet, [*survivors, "supervisor"])
        seen.cpu_s = sum(fleet.cpu_s(n) - cpu0[n] for n in survivors)
        seen.supervisor_cpu_s = fleet.cpu_s("supervisor") - cpu0["supervisor"]
        seen.worker_cpu_s = sum(children_cpu_s(fleet.procs[n].pid) - work0[n] for n in survivors)
        seen.supervisor_delay_p99_ms = histogram_quantile({}, seen.end_scrape.get("supervisor", {}), 0.99)
        for follower in followers.values():
            follower.terminate()
            follower.wait(timeout=10)
        seen.watcher.read(folder / "events.jsonl")
        seen.direct.read(folder / "events-r1.jsonl")
    finally:
        fleet.stop()
    return summarise(seen)


def summarise(seen: Observed) -> FleetRun:
    """The figures of a run from its observations."""
    watcher, streamer, survivors, seconds = seen.watcher, seen.streamer, seen.survivors, seen.seconds
    notes: list[str] = []
    killed_calls = [c for c, r in watcher.started.items() if r == "r2"] if seen.killed_at is not None else []
    survivor_calls = [c for c, r in watcher.started.items() if r in survivors]
    ends = [watcher.ended[c] for c in killed_calls if c in watcher.ended]
    kill_to_ended = (
        round(max(t for t, _ in ends) - seen.killed_at, 2)
        if seen.killed_at is not None and ends and len(ends) == len(killed_calls)
        else None
    )
    if seen.killed_at is not None and len(ends) < len(killed_calls):
        notes.append(f"{len(killed_calls) - len(ends)} call(s) of the killed replica never shown ended")
    sid_index = {sid: i for i, sid in enumerate(streamer.sids)}
    others_cut = sum(1 for c in survivor_calls if sid_index.get(c) in streamer.cut)
    stops = {sid: seen.t0 + i / streamer.arrivals_per_s + seconds for i, sid in enumerate(streamer.sids)}
    others_early = sum(1 for c in survivor_calls if c in watcher.ended and watcher.ended[c][0] < stops[c] - 1.0)
    end, last_scrape = seen.end_scrape, seen.killed_scrape
    dropped = sum(dropped_audio_s(v) for n, v in end.items() if n != "supervisor")
    dropped += sum(dropped_audio_s(v) for v in last_scrape.values())
    bus_dropped = sum(total(v, "emostream_bus_dropped_total") for v in {**end, **last_scrape}.values())
    sup = end.get("supervisor", {})
    received_r1 = sum(v for k, v in sup.items() if k.startswith("emostream_bus_received_total") and '"r1"' in k)
    received = total(sup, "emostream_bus_received_total")
    call_s = seconds * sum(
        1 for i, sid in enumerate(streamer.sids) if watcher.started.get(sid) in survivors and i not in streamer.cut
    )
    r1_call_s = seconds * sum(
        1 for i, sid in enumerate(streamer.sids) if watcher.started.get(sid) == "r1" and i not in streamer.cut
    )
    after = watcher.hops_after
    return FleetRun(
        calls=streamer.n_calls,
        seen=len([c for c in streamer.sids if c in watcher.started]),
        with_readings=len([c for c in streamer.sids if watcher.readings.get(c, 0) > 0]),
        p99_ms=watcher.quantile_ms(0.99),
        p50_ms=watcher.quantile_ms(0.5),
        p99_r1_ms=watcher.quantile_ms(0.99, "r1"),
        p99_r1_direct_ms=seen.direct.quantile_ms(0.99, ""),
        bus_added_p99_ms=_added_ms(watcher, seen.direct, 0.99),
        bus_added_p50_ms=_added_ms(watcher, seen.direct, 0.5),
        supervisor_delay_p99_ms=seen.supervisor_delay_p99_ms,
        broker_outage_s=None if seen.outage_s is None else round(seen.outage_s, 2),
        audio_dropped_s=round(dropped, 3),
        bus_dropped=bus_dropped,
        bus_missing=total(sup, "emostream_bus_missing_total"),
        hops_after_restart=sum(1 for t, _ in after if seen.restored_at is not None and t > seen.restored_at),
        killed="r2" if seen.killed_at is not None else None,
        killed_calls=len(killed_calls),
        kill_to_ended_s=kill_to_ended,
        kill_reasons=sorted({r for _, r in ends}),
        others_cut=others_cut,
        others_ended_early=others_early,
        others_hops_after_kill=sum(
            1 for t, r in after if seen.killed_at is not None and t > seen.killed_at + 1 and r in survivors
        ),
        replica_cpu_s=round(seen.cpu_s, 2),
        worker_cpu_s=round(seen.worker_cpu_s, 2),
        call_seconds=round(call_s, 1),
        records_per_call_s=round(received_r1 / max(r1_call_s, 1e-9), 2),
        client_max_lag_s=round(streamer.max_lag_s, 2),
        supervisor_cpu_per_record_us=round(1e6 * seen.supervisor_cpu_s / max(received, 1.0), 1),
        wall_s=round(time.monotonic() - seen.started, 1),
        notes=notes,
    )


def histogram_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """The q-quantile (ms) of the supervisor's ``emostream_bus_delay_seconds``: the upper bound of its bucket."""
    pattern = re.compile(r'emostream_bus_delay_seconds_bucket\{le="([^"]+)"\}')
    buckets = sorted(
        (float("inf") if m.group(1) == "+Inf" else float(m.group(1)), after[k] - before.get(k, 0.0))
        for k in after
        if (m := pattern.fullmatch(k))
    )
    count = buckets[-1][1] if buckets else 0.0
    return next((1000.0 * bound for bound, n in buckets if count > 0 and n >= q * count), None)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "follow":
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            asyncio.run(follow(int(sys.argv[2]), Path(sys.argv[3])))
    else:
        print("usage: python -m benchmarks.fleet follow SUPERVISOR_PORT OUT.jsonl", file=sys.stderr)
        sys.exit(2)
