"""The measured comparison behind the bus choice (docs/scaling.md): Redis Streams against NATS JetStream.

For each broker (Debian's ``redis-server`` 7.0 and ``nats-server`` 2.9 with JetStream, both
with their data on disk, on 127.0.0.1): one publisher appends hop-sized records (the JSON of
a hop record, about 450 bytes) at ``--rate`` a second for ``--seconds`` s, the way a replica
would (Redis: pipelined ``XADD`` per 5 ms tick with redis-py's asyncio client; NATS: the
tick's JetStream publishes awaited together with nats-py, each acknowledged), and one
subscriber in the same process reads them (``XREAD BLOCK``; an ordered JetStream push
consumer). A third of the way in, the broker is stopped with SIGTERM and started again.

Printed per broker: the delay from publishing to receiving (p50, p99, outside the restart),
the CPU time of this process (publisher and subscriber together) per record, the records
acknowledged and received, acknowledged ones never received (lost outside the outage), and
how the clients behaved around the restart (seconds without a successful publish, whether
the subscriber came back by itself).

Run: ``pip install nats-py`` (not a dependency of emostream), then
``python -m benchmarks.bus_compare [--rate 1000] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_fleet import hop_record
from benchmarks.fleet import free_port, wait_port

TICK_S = 0.005


@dataclass
class Tally:
    """What one broker's run measured."""

    broker: str
    sent: int = 0  # publishes attempted
    acked: set[int] = field(default_factory=set)
    received: dict[int, float] = field(default_factory=dict)  # seq -> delay s
    failed: int = 0
    outage: tuple[float, float] = (0.0, 0.0)  # broker stopped .. started (perf_counter)
    last_fail: float = 0.0
    first_ok_after: float | None = None
    cpu_s: float = 0.0

    def report(self) -> dict[str, Any]:
        delays = sorted(self.received.values())
        lost = sorted(self.acked - set(self.received))

        def q(p: float) -> float | None:
            return round(1000 * delays[min(len(delays) - 1, int(p * len(delays)))], 2) if delays else None

        blind = None if self.first_ok_after is None else round(self.first_ok_after - self.outage[0], 2)
        return {
            "broker": self.broker,
            "published": self.sent,
            "acknowledged": len(self.acked),
            "received": len(self.received),
            "failed publishes (outage)": self.failed,
            "acknowledged, never received": len(lost),
            "delay p50 ms": q(0.5),
            "delay p99 ms": q(0.99),
            "CPU µs per record (pub + sub)": round(1e6 * self.cpu_s / max(self.sent, 1), 1),
            "broker down s": round(self.outage[1] - self.outage[0], 2),
            "no publish succeeded for s (from the stop)": blind,
        }


class Broker:
    """One broker process on a free port with its data in a folder; restartable."""

    def __init__(self, cmd: Callable[[int, Path], list[str]], folder: Path) -> None:
        self.cmd, self.folder, self.port = cmd, folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "broker.log").open("ab")
        self.proc = subprocess.Popen(self.cmd(self.port, self.folder), stdout=log, stderr=log, cwd=self.folder)
        wait_port(self.port, self.proc, "broker")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def redis_cmd(port: int, folder: Path) -> list[str]:
    return ["redis-server", "--port", str(port), "--dir", str(folder), "--appendonly", "yes", "--save", ""]


def nats_cmd(port: int, folder: Path) -> list[str]:
    return ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder)]


async def drive(
    tally: Tally,
    broker: Broker,
    publish: Callable[[list[tuple[int, bytes]]], Awaitable[None]],
    rate: float,
    seconds: float,
) -> None:
    """Publish at ``rate`` for ``seconds``; restart the broker a third of the way in."""
    restart_at = time.perf_counter() + seconds / 3
    end = time.perf_counter() + seconds
    restarting: asyncio.Future[None] | None = None
    start, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() < end:
        due = int((time.perf_counter() - start) * rate)
        batch = []
        while tally.sent < due:
            tally.sent += 1
            record = hop_record(tally.sent) | {"seq": tally.sent, "sent": time.perf_counter()}
            batch.append((tally.sent, json.dumps(record).encode()))
        if batch:
            try:
                await publish(batch)
                tally.acked.update(seq for seq, _ in batch)
                if tally.outage[0] and tally.first_ok_after is None and tally.last_fail:
                    tally.first_ok_after = time.perf_counter()
            except Exception:  # any client error during the outage counts as a failed publish
                tally.failed += len(batch)
                tally.last_fail = time.perf_counter()
        if restarting is None and time.perf_counter() >= restart_at:

            def bounce() -> None:
                stopped = time.perf_counter()
                broker.stop()
                broker.start()
                tally.outage = (stopped, time.perf_counter())

            restarting = asyncio.ensure_future(asyncio.to_thread(bounce))
        await asyncio.sleep(TICK_S)
    if restarting is not None:
        await restarting
    await asyncio.sleep(2.0)  # the subscriber catches up
    tally.cpu_s = time.process_time() - cpu0


async def run_redis(folder: Path, rate: float, seconds: float) -> Tally:
    from redis.asyncio import Redis

    broker = Broker(redis_cmd, folder)
    broker.start()
    tally = Tally("redis streams (redis-server 7.0, redis-py)")
    pub = Redis(port=broker.port, socket_timeout=2, socket_connect_timeout=1)
    sub = Redis(port=broker.port, socket_timeout=4, socket_connect_timeout=1)

    async def publish(batch: list[tuple[int, bytes]]) -> None:
        pipe = pub.pipeline(transaction=False)
        for _, data in batch:
            pipe.xadd("cmp", {"j": data}, maxlen=100000, approximate=True)
        await pipe.execute()

    async def read() -> None:
        last = "0-0"
        while True:
            try:
                reply: Any = await sub.xread({"cmp": last}, count=1000, block=1000)
            except Exception:  # the broker is away: try again (redis-py reconnects on the next command)
                await asyncio.sleep(0.05)
                continue
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    record = json.loads(fields[b"j"])
                    tally.received.setdefault(record["seq"], now - record["sent"])

    reader = asyncio.ensure_future(read())
    try:
        await drive(tally, broker, publish, rate, seconds)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        broker.stop()
    return tally


async def run_nats(folder: Path, rate: float, seconds: float) -> Tally:
    import nats
    from nats.js.api import DeliverPolicy, StorageType, StreamConfig

    broker = Broker(nats_cmd, folder)
    broker.start()
    tally = Tally("nats jetstream (nats-server 2.9, nats-py)")
    nc = await nats.connect(
        f"nats://127.0.0.1:{broker.port}", reconnect_time_wait=0.05, max_reconnect_attempts=-1, connect_timeout=1
    )
    js = nc.jetstream(timeout=2)
    await js.add_stream(StreamConfig(name="CMP", subjects=["cmp"], storage=StorageType.FILE, max_msgs=100000))

    async def publish(batch: list[tuple[int, bytes]]) -> None:
        await asyncio.gather(*(js.publish("cmp", data) for _, data in batch))

    async def on_message(msg: Any) -> None:
        now = time.perf_counter()
        record = json.loads(msg.data)
        tally.received.setdefault(record["seq"], now - record["sent"])

    sub = await js.subscribe("cmp", cb=on_message, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        await drive(tally, broker, publish, rate, seconds)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await nc.close()
        broker.stop()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus_compare", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="records a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of publishing (default 30)")
    args = parser.parse_args(argv)
    reports = []
    for name, runner in (("redis-server", run_redis), ("nats-server", run_nats)):
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            print(f"{name} is not installed (apt-get install {name}); skipped")
            continue
        with tempfile.TemporaryDirectory(prefix="bus_compare_") as tmp:
            reports.append(asyncio.run(runner(Path(tmp), args.rate, args.seconds)).report())
    print(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
