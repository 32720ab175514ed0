"""A fleet on 127.0.0.1: HAProxy in front of 2 replicas, a Redis bus, one supervisor (:mod:`benchmarks.fleet`).

Streams Twilio-format calls (default 40 calls of 40 s, 10 new a second) through HAProxy
(least connections) to two ``emostream serve --bus`` replicas (2 analysis workers each), while one client of the
supervisor's ``/events`` reads every record. 12 s after the first call the broker is
restarted (SIGTERM, started again: its append-only file keeps the stream); 22 s after it
replica r2 is killed with SIGKILL (with its analysis workers). Figures:

- calls the supervisor showed with readings, and that nothing was dropped (audio on the
  replicas, records on the bus);
- the p99 delay of a hop record from its computation on a replica to its arrival at the
  supervisor's ``/events`` client (wall clocks of one machine);
- the broker restart: audio dropped on the replicas, records lost (dropped by the replicas
  plus gaps in the sequence numbers the supervisor saw), hops received after it;
- the killed replica: seconds from SIGKILL until the last of its calls is shown ended (with
  the reason), and whether the other replica's calls went on untouched;
- the bus's CPU per call-second on a replica, against the call's analysis: CPU per record
  of the replica's bus path (JSON encoding, queueing, pipelined ``XADD`` to a real
  ``redis-server``), measured in this process on 20,000 hop records, times the records a
  call-second puts on the bus (counted on the supervisor), divided by the analysis
  workers' CPU per call-second in the fleet run;
- a real supervisor fed the records of 1,000 calls (4 a call-second, published from this
  process) with one ``/events`` client reading everything: its CPU per record and share of
  a core, what the client received.

Standalone: ``python -m benchmarks.bench_fleet [--calls 40] [--call-seconds 40]``; inside
``python -m benchmarks --only fleet``. Needs Debian's ``redis-server`` and ``haproxy``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_serve import proc_cpu_s
from benchmarks.common import available_models, figure, result
from benchmarks.fleet import Fleet, FleetRun, Watcher, free_port, missing_binaries, run_fleet

CALLS_TARGET = 40
P99_TARGET_MS = 250.0
KILL_TARGET_S = 5.0
BUS_SHARE_TARGET = 0.10
MICRO_RECORDS = 20000
RATE_CALLS = 1000  # the supervisor fed the records of this many calls


def hop_record(i: int) -> dict[str, Any]:
    """A hop record as a replica publishes it (the labels of the shipped models, rounded scores)."""
    scores = {"angry": 0.1234, "calm": 0.4321, "happy": 0.2, "neutral": 0.1, "sad": 0.1445}
    return {
        "type": "hop",
        "source": "twilio",
        "session_id": "MZbench0000",
        "time": "2026-12-03T07:00:00.000+00:00",
        "channel": 0,
        "role": "customer",
        "t_start": i * 0.5,
        "t_end": i * 0.5 + 2.0,
        "speech_ratio": 0.8,
        "scores": scores,
        "smoothed": scores,
        "emotion": "calm",
        "confidence": 0.4321,
        "arousal": 0.3,
        "uncertain": False,
        "latency_ms": 3.2,
        "call_id": "MZbench0000",
    }


@dataclass(frozen=True, kw_only=True)
class PerRecord:
    """What one bus record costs, from :func:`_publish_many`."""

    replica_cpu_s: float  # encoding, queueing and appending it (pipelined XADD), on the replica
    broker_cpu_s: float  # redis-server
    broker_bytes: float  # the broker's memory for it while it is kept (max_age_s)
    supervisor_cpu_s: float  # reading (XREAD of up to 2,000) and taking it into the fleet's view, no page


async def _publish_many(url: str, n: int, broker_pid: int) -> PerRecord:
    """Publish ``n`` hop records on the bus as a replica does, then read them back as the supervisor does."""
    from prometheus_client import CollectorRegistry

    from emostream.server.bus import BusPublisher, parse_entry, redis_client
    from emostream.server.bus_config import BusConfig
    from emostream.server.events import EventHub
    from emostream.server.fleet import FleetCalls

    hub = EventHub(10)
    bus = BusPublisher(BusConfig(url=url, max_pending=n + 100), "bench", CollectorRegistry(), heartbeat=dict)
    bus.attach(hub)
    bus.start()
    while not bus.connected:
        await asyncio.sleep(0.01)
    records = [hop_record(i) for i in range(n)]
    cpu0, broker0 = time.process_time(), proc_cpu_s(broker_pid)
    for i, record in enumerate(records):
        hub.publish("MZbench0000", record)
        if i % 20 == 0:  # records arrive a few at a time, as hops come out of the workers
            await asyncio.sleep(0)
    while bus.pending:
        await asyncio.sleep(0.001)
    cpu, broker = time.process_time() - cpu0, proc_cpu_s(broker_pid) - broker0
    await bus.stop()
    client = redis_client(url, 5.0)
    stream_bytes = float(await client.memory_usage(bus.cfg.stream, samples=0) or 0)
    memory = stream_bytes / max(1, await client.xlen(bus.cfg.stream))
    fleet = FleetCalls(EventHub(10), hop_s=0.5, min_speech_ratio=0.3, heartbeat_timeout_s=3.0)
    fleet.hub.subscribe()  # one page: each record is encoded for it as on a supervisor with a page open
    last, taken, read0 = "0-0", 0, time.process_time()
    while taken < n:
        reply: Any = await client.xread({bus.cfg.stream: last}, count=2000, block=1000)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                entry = parse_entry(fields)
                if entry is not None:
                    fleet.take(entry[0], entry[1], entry[2], entry[4])
                    taken += 1
    read = time.process_time() - read0
    await client.aclose()
    return PerRecord(replica_cpu_s=cpu / n, broker_cpu_s=broker / n, broker_bytes=memory, supervisor_cpu_s=read / n)


def bus_cpu_per_record(folder: Path) -> PerRecord:
    """:func:`_publish_many` against a redis-server of its own."""
    fleet = Fleet(folder)
    fleet.ports["redis"] = free_port()
    try:
        fleet.start_redis()
        return asyncio.run(_publish_many(fleet.bus_url, MICRO_RECORDS, fleet.procs["redis"].pid))
    finally:
        fleet.stop()


async def _feed(url: str, calls: int, seconds: float) -> int:
    """Publish the records of ``calls`` calls (4 a call-second: 2 channels, a hop each 0.5 s) for ``seconds``."""
    from prometheus_client import CollectorRegistry

    from emostream.server.bus import BusPublisher
    from emostream.server.bus_config import BusConfig
    from emostream.server.events import EventHub

    ids = [f"MZrate{i:05d}" for i in range(calls)]
    hub = EventHub(10)
    bus = BusPublisher(BusConfig(url=url), "synthetic", CollectorRegistry(), heartbeat=lambda: {"calls": ids})
    bus.attach(hub)
    bus.start()
    while not bus.connected:
        await asyncio.sleep(0.01)
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * 4 * calls)
        while sent < due:
            record = hop_record(sent // (2 * calls)) | {"call_id": ids[sent % calls], "channel": (sent // calls) % 2}
            record["time"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            hub.publish(record["call_id"], record)
            sent += 1
        await asyncio.sleep(0.01)
    while bus.pending:
        await asyncio.sleep(0.01)
    await bus.stop()
    return sent


def supervisor_at_rate(folder: Path, calls: int, seconds: float = 10.0) -> dict[str, float]:
    """A real supervisor (``emostream serve --supervisor``, one ``/events`` client reading everything) fed the
    records of ``calls`` calls: its CPU per record and share of a core, the client's delay p99."""
    fleet = Fleet(folder)
    fleet.ports["redis"] = free_port()
    try:
        fleet.start_redis()
        fleet.start_serve("supervisor", ["--supervisor", "--bus", fleet.bus_url])
        out = folder / "page.jsonl"
        follower = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", "follow", str(fleet.ports["supervisor"]), str(out)],
            cwd=Path(__file__).resolve().parent.parent,
        )
        time.sleep(1.0)
        cpu0 = fleet.cpu_s("supervisor")
        sent = asyncio.run(_feed(fleet.bus_url, calls, seconds))
        time.sleep(1.0)
        cpu = fleet.cpu_s("supervisor") - cpu0
        follower.terminate()
        follower.wait(timeout=10)
        page = Watcher()
        page.read(out)
        return {
            "calls": calls,
            "records_per_s": round(sent / seconds),
            "supervisor_cpu_per_record_us": round(1e6 * cpu / max(sent, 1), 1),
            "supervisor_core_share": round(cpu / seconds, 3),
            "page_received": sum(page.hops.values()),
            "page_delay_p99_ms": page.quantile_ms(0.99) or float("nan"),
        }
    finally:
        fleet.stop()


def figures_of(run: FleetRun, per_record: PerRecord) -> list[dict[str, Any]]:
    per_record_s = per_record.replica_cpu_s
    clean = run.audio_dropped_s == 0 and run.bus_dropped == 0 and run.bus_missing == 0
    analysis_per_call_s = run.worker_cpu_s / max(run.call_seconds, 1e-9)
    bus_per_call_s = per_record_s * run.records_per_call_s
    share = bus_per_call_s / max(analysis_per_call_s, 1e-12)
    return [
        figure(
            "calls through HAProxy to 2 replicas + supervisor, shown with readings, nothing dropped",
            run.with_readings if clean else 0,
            "calls",
            target=CALLS_TARGET,
            better="higher",
            note=f"{run.seen} of {run.calls} shown; audio dropped {run.audio_dropped_s} s, bus records dropped "
            f"{run.bus_dropped:g}, missing {run.bus_missing:g}",
        ),
        figure(
            "hop record, replica to the supervisor's /events, p99",
            run.p99_ms,
            "ms",
            target=P99_TARGET_MS,
            note=f"p50 {run.p50_ms} ms; from the hop's computation in the replica's worker to a client of the "
            f"supervisor's /events in a process of its own. Peer in the same run: r1's hops via the supervisor "
            f"p99 {run.p99_r1_ms} ms, from r1's own /events {run.p99_r1_direct_ms} ms",
        ),
        figure(
            "hop record, replica's /events to the supervisor's /events (what the bus adds), p99",
            run.bus_added_p99_ms,
            "ms",
            target=P99_TARGET_MS,
            note=f"p50 {run.bus_added_p50_ms} ms: each of r1's hops at a client of the supervisor minus at a client of "
            f"r1 (both in processes of their own); the supervisor's histogram (replica queue to fan-out) p99 <= "
            f"{run.supervisor_delay_p99_ms} ms",
        ),
        figure(
            "broker restart: audio lost",
            run.audio_dropped_s,
            "s",
            target=0.0,
            note=f"outage {run.broker_outage_s} s (SIGTERM, started again); {run.hops_after_restart} hops after it",
        ),
        figure(
            "broker restart: records lost",
            run.bus_dropped + run.bus_missing,
            "records",
            target=0.0,
            note="dropped by the replicas + gaps in the sequence seen by the supervisor",
        ),
        figure(
            "replica killed: its calls shown ended on the supervisor after",
            run.kill_to_ended_s,
            "s",
            target=KILL_TARGET_S,
            note=f"{run.killed_calls} calls; reason {run.kill_reasons}; other replica: {run.others_cut} cut, "
            f"{run.others_ended_early} ended early, {run.others_hops_after_kill} hops after the kill",
        ),
        figure(
            "bus CPU per call-second on a replica, share of the call's analysis",
            round(share, 4),
            "",
            target=BUS_SHARE_TARGET,
            note=f"{1e6 * per_record_s:.0f} µs per record × {run.records_per_call_s} records per call-second = "
            f"{1000 * bus_per_call_s:.3f} ms; analysis {1000 * analysis_per_call_s:.2f} ms CPU per call-second",
        ),
        figure(
            "supervisor CPU per bus record (read, fleet view, one page's encoding)",
            round(1e6 * per_record.supervisor_cpu_s, 1),
            "µs",
            note=f"20,000 records read back at once; in the fleet run (a few records per read, one /events "
            f"client, metrics): {run.supervisor_cpu_per_record_us} µs",
        ),
        figure(
            "broker per bus record",
            round(1e6 * per_record.broker_cpu_s, 1),
            "µs CPU",
            note=f"redis-server; {per_record.broker_bytes:.0f} bytes of memory per record kept",
        ),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The fleet figures against the targets of issue 20."""
    missing = missing_binaries()
    if missing:
        return result("fleet", [figure("fleet", f"not run: {', '.join(missing)} not installed", target=0.0)])
    quick = bool(getattr(args, "quick", False))  # a smoke test: 6 calls of 16 s, the same events earlier
    calls = int(getattr(args, "calls", None) or (6 if quick else CALLS_TARGET))
    seconds = float(getattr(args, "call_seconds", None) or (16.0 if quick else 40.0))
    restart_at, kill_at = (5.0, 9.0) if quick else (12.0, 22.0)
    workers = int(getattr(args, "workers", None) or (1 if quick else 2))  # 2: [server] workers' default
    models = available_models(getattr(args, "models", None))
    model = "fast" if not models or "fast" in models else models[0]
    old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if old is not None:  # the harness pins to one CPU; the fleet gets the machine's two
        os.sched_setaffinity(0, set(sorted(range(os.cpu_count() or 1))[:2]))
    try:
        with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
            load_before = os.getloadavg()[0]
            folders = Path(tmp) / "fleet", Path(tmp) / "micro", Path(tmp) / "rate"
            for folder in folders:
                folder.mkdir()
            fleet_run = asyncio.run(
                run_fleet(
                    folders[0],
                    calls=calls,
                    seconds=seconds,
                    model=model,
                    workers=workers,
                    restart_broker_at_s=restart_at,
                    kill_at_s=kill_at,
                )
            )
            per_record = bus_cpu_per_record(folders[1])
            at_rate = supervisor_at_rate(folders[2], 100 if quick else RATE_CALLS, 4.0 if quick else 10.0)
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    details = dataclasses.asdict(fleet_run) | {
        "per_record": dataclasses.asdict(per_record),
        "supervisor_at_rate": at_rate,
        "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    figures = figures_of(fleet_run, per_record)
    figures.append(
        figure(
            f"supervisor fed {at_rate['calls']:,} calls' records ({at_rate['records_per_s']:,} a second)",
            at_rate["supervisor_core_share"],
            "of a core",
            note=f"{at_rate['supervisor_cpu_per_record_us']} µs per record with one /events client reading all; "
            f"that client got {at_rate['page_received']:,} hops, p99 {at_rate['page_delay_p99_ms']} ms",
        )
    )
    return result("fleet", figures, details)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import print_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, help=f"calls streamed through HAProxy (default {CALLS_TARGET})")
    parser.add_argument("--call-seconds", type=float, help="seconds each call streams (default 40)")
    parser.add_argument("--model", dest="models", action="append", help="model name or .json path (default fast)")
    parser.add_argument("--quick", action="store_true", help="6 calls of 16 s (a smoke test)")
    parser.add_argument("--workers", type=int, help="analysis workers per replica (default 2, as [server] workers)")
    res = run(parser.parse_args(argv))
    print_results([res])
    print(json.dumps(res["details"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
