"""``emostream serve`` under load: concurrent Twilio-format calls paced in real time on loopback.

The server runs in its own process (``python -m emostream serve --port 0 --model M``, two
analysis worker processes by default) so that its CPU time (user + sys of the server and
its workers, all threads, from ``/proc/<pid>/stat``) is measured apart from the load
client's. The client is this process: one asyncio loop, raw TCP
sockets, the WebSocket handshake written by hand, and every Twilio message of the call
**pre-encoded once** as a masked WebSocket frame (connected, start, then one ``media``
message per track every 20 ms: 8 kHz μ-law, base64, with the timestamps Twilio sends;
every call streams the same pre-built frames, started at staggered times, so the client
only writes bytes). One ``/events`` subscriber reads (and discards) every record, as a
supervisor page would. Client and server share the machine's two cores; the client's
own CPU time is reported too.

The number of calls steps up (10, 25, 50, 75, 100, 125, ... for the fast model; 5, 10,
20, ... for the accurate one). In each step the calls start ``1 / --arrivals-per-s`` apart
(default 10 new calls a second, 36,000 an hour: far more than any call center of that
size sees, yet not all at the same instant) and all of them stream until ``--step-seconds``
after the last one started. The measured window opens 2 s after the last call started and
closes when the calls stop sending (their start-up and summaries are not steady-state
load); dropped audio counts over the whole step, the ramp included. With
``--arrivals-per-s 1000`` every call starts at once: the first windows of all calls then
fall due together, and the analysis falls behind for a few seconds before it catches up. A
step *holds* when, in that window, the server's hop latency (from the arrival of the
audio that completes a hop to its record being published: the server's
``emostream_hop_latency_seconds`` histogram) has p99 <= 100 ms, no audio was dropped
(``emostream_dropped_audio_seconds_total``) and every call stayed connected. Stepping
stops at the first step that does not hold. The audio: the demo recording as a two-party
call (customer on the inbound track, agent on the outbound track, taking 5 s turns);
default config: the customer channel analysed, the agent metered only.

Standalone: ``python -m benchmarks.bench_serve [--model fast] [--steps 25,50,100] [--step-seconds 20]``;
inside ``python -m benchmarks`` both shipped models (``--quick``: short steps, two steps each).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import available_models, demo_path, figure, looped_signal, result
from emostream.audio.codecs import mulaw_encode
from emostream.audio.files import resample
from emostream.server.twilio import stream_messages

TOKEN = "bench-serve-token-0123456789"
RATE_HZ = 8000
FRAME_S = 0.02
TURN_S = 5.0
P99_TARGET_MS = 100.0
CALLS_TARGET_FAST = 100
STEPS = {"fast": (10, 25, 50, 75, 100, 125, 150, 200), "accurate": (5, 10, 20, 40, 60, 75, 90, 100, 125)}
QUICK_STEPS = {"fast": (10, 25), "accurate": (5, 10)}
MASK = b"\x1f\x2e\x3d\x4c"
TICK_S = 0.005
WARMUP_S = 2.0
ARRIVALS_PER_S = 10.0  # new calls per second while a step ramps up (36,000 an hour)


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client WebSocket frame (FIN set) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = np.frombuffer(MASK * (n // 4 + 1), dtype=np.uint8)[:n]
    masked = (np.frombuffer(payload, dtype=np.uint8) ^ mask).tobytes()
    return head + MASK + masked


def call_audio(seconds: float) -> dict[str, bytes]:
    """The demo as a two-party call: customer (inbound) and agent (outbound) taking 5 s turns, μ-law 8 kHz."""
    demo = resample(looped_signal(demo_path(), 2 * seconds + 10.0, 16000), 16000, RATE_HZ)
    n = int(seconds * RATE_HZ)
    turn = (np.arange(n) // int(TURN_S * RATE_HZ)) % 2 == 0
    customer, agent = demo[:n] * turn, demo[n : 2 * n] * ~turn
    return {"inbound": mulaw_encode(customer).tobytes(), "outbound": mulaw_encode(agent).tobytes()}


@dataclass
class PreparedCall:
    """The frames of one call's stream, pre-encoded: head (connected, start), one bytes per 20 ms, stop."""

    head: bytes
    frames: list[bytes]
    stop: bytes


def prepare(audio: dict[str, bytes]) -> tuple[list[str], list[bytes], bytes]:
    """Twilio messages as masked frames; the start message is made per call (its streamSid)."""
    head, frames, stop = stream_messages(audio, stream_sid="MZbench", custom_parameters={"token": TOKEN})
    media = [b"".join(ws_frame(text.encode()) for text in group) for group in frames]
    return head, media, ws_frame(stop[0].encode())


async def open_ws(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket connection (handshake by hand) to 127.0.0.1:port/path."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in status.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {status[:80]!r}")
    return reader, writer


async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: list[int] | None = None) -> None:
    """Read and discard what the server sends on a client connection (counted in ``counter``), answering its
    keepalive pings as Twilio and browsers do: uvicorn pings every 20 s and closes (1011) a connection whose
    pong does not come within 20 s more, which cut calls longer than 40 s and the ``/events`` reader."""
    buf = bytearray()
    while True:
        data = await reader.read(65536)
        if not data:
            return
        if counter is not None:
            counter[0] += len(data)
        buf += data
        while len(buf) >= 2:
            n, head = buf[1] & 0x7F, 2
            if n >= 126:
                head = 4 if n == 126 else 10
                if len(buf) < head:
                    break
                n = int.from_bytes(buf[2:head], "big")
            if len(buf) < head + n:
                break
            if buf[0] & 0x0F == 9:  # a ping: the pong carries its payload
                writer.write(ws_frame(bytes(buf[head : head + n]), opcode=10))
            del buf[: head + n]


@dataclass
class StepResult:
    calls: int
    audio_s: float
    wall_s: float
    server_cpu_s: float
    loop_cpu_s: float  # the server process itself (event loop, its threads); the rest is its analysis workers
    client_cpu_s: float
    hops: int
    p99_ms: float | None
    p50_ms: float | None
    dropped_audio_s: float
    disconnected: int
    late_sends: int
    ramp_s: float
    holds: bool = field(init=False)

    def __post_init__(self) -> None:
        self.holds = (
            self.p99_ms is not None
            and self.p99_ms <= P99_TARGET_MS
            and self.dropped_audio_s == 0
            and self.disconnected == 0
            and self.hops > 0
        )

    @property
    def cpu_per_call_s(self) -> float:
        """Server CPU seconds per second of call audio."""
        return self.server_cpu_s / max(self.audio_s, 1e-9)

    @property
    def loop_cpu_per_call_s(self) -> float:
        """The server process's own share (event loop, its threads; not the analysis workers)."""
        return self.loop_cpu_s / max(self.audio_s, 1e-9)


@dataclass
class Window:
    """The steady-state measurement window of a step: metrics and CPU at its start and end."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)
    loop_cpu_s: list[float] = field(default_factory=list)
    client_cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)

    async def mark(self, port: int, pid: int) -> None:
        own, workers = proc_cpu_split_s(pid)
        self.server_cpu_s.append(own + workers)
        self.loop_cpu_s.append(own)
        self.client_cpu_s.append(client_cpu_s())
        self.wall_s.append(time.perf_counter())
        self.metrics.append(parse_metrics(await asyncio.to_thread(metrics_text, port)))


async def run_step(
    port: int,
    pid: int,
    prepared: tuple[list[str], list[bytes], bytes],
    n_calls: int,
    step_s: float,
    *,
    arrivals_per_s: float = ARRIVALS_PER_S,
) -> tuple[dict[str, Any], Window]:
    """Stream ``n_calls`` calls that start ``1 / arrivals_per_s`` s apart and all stream until
    ``step_s`` s after the last one started.

    The window measured opens ``WARMUP_S`` after the last call started (start-up of the
    calls, first readings) and closes when the calls stop sending audio, before their
    ``stop`` (their summaries): every call streams throughout the window.
    """
    head, frames, stop = prepared
    offsets = [i / arrivals_per_s for i in range(n_calls)]
    ramp_s = offsets[-1]
    n_frames = [int((ramp_s + step_s - offset) / FRAME_S) for offset in offsets]
    if n_frames[0] > len(frames):
        raise RuntimeError(f"{len(frames) * FRAME_S:.0f} s of audio prepared; {n_frames[0] * FRAME_S:.0f} s needed")
    loop = asyncio.get_running_loop()
    conns = [await open_ws(port, "/twilio") for _ in range(n_calls)]
    readers = [asyncio.get_running_loop().create_task(drain(r, w)) for r, w in conns]  # pongs to keepalive pings
    connected = ws_frame(head[0].encode())
    for i, (_, writer) in enumerate(conns):
        start = head[1].replace('"MZbench"', f'"MZbench{n_calls}x{i:04d}"')
        writer.write(connected + ws_frame(start.encode()))
    t0 = loop.time() + 0.2
    sent = [0] * n_calls
    late = 0
    window = Window()
    marking: asyncio.Task[None] | None = None
    while True:
        now = loop.time()
        busy = False
        for i, (_, writer) in enumerate(conns):
            due = min(n_frames[i], int((now - t0 - offsets[i]) / FRAME_S) + 1) if now >= t0 + offsets[i] else 0
            if due - sent[i] > 2:
                late += 1
            while sent[i] < due:
                writer.write(frames[sent[i]])
                sent[i] += 1
            busy = busy or sent[i] < n_frames[i]
        if marking is None and now >= t0 + ramp_s + WARMUP_S:
            marking = loop.create_task(window.mark(port, pid))
        if not busy:
            break
        await asyncio.sleep(TICK_S)
    if marking is not None:
        await marking
    await window.mark(port, pid)
    disconnected = await _stop_calls(conns, readers, stop)
    return {"late_ticks": late, "disconnected": disconnected, "ramp_s": ramp_s}, window


async def _stop_calls(
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], readers: list[asyncio.Task[None]], stop: bytes
) -> int:
    """Send every call its ``stop`` and close it; how many the server had cut before."""
    disconnected = 0
    for reader, writer in conns:
        if writer.is_closing() or reader.at_eof():
            disconnected += 1
        writer.write(stop)
    await asyncio.sleep(0.5)
    for task in readers:
        task.cancel()
    for _, writer in conns:
        writer.close()
    return disconnected


def metrics_text(port: int) -> str:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def histogram_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """The q-quantile (ms) of this step's hop latencies: the upper bound of the bucket that reaches it."""
    pattern = re.compile(r'emostream_hop_latency_seconds_bucket\{le="([^"]+)"\}')
    buckets = sorted(
        (float("inf") if m.group(1) == "+Inf" else float(m.group(1)), after[k] - before.get(k, 0.0))
        for k in after
        if (m := pattern.fullmatch(k))
    )
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return 1000.0 * bound
    return None


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its child processes (the analysis workers), from /proc."""
    own, children = proc_cpu_split_s(pid)
    return own + children


def proc_cpu_split_s(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of process ``pid`` itself and of its child processes, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    ticks = os.sysconf("SC_CLK_TCK")
    return _cpu_ticks([pid]) / ticks, _cpu_ticks(children) / ticks


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_server(model: str, folder: Path, workers: int | None = None) -> tuple[subprocess.Popen[str], int]:
    """``emostream serve`` on a free port (``workers``: analysis processes, None for the default); (process, port)."""
    config = folder / "serve.toml"
    text = "[server]\nmax_calls = 2000\nmax_backlog_s = 2.0\nidle_timeout_s = 60.0\n"
    if workers is not None:
        text += f"workers = {workers}\n"
    config.write_text(text, encoding="utf-8")
    env = {**os.environ, "EMOSTREAM_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "emostream", "serve", "--port", "0", "--model", model, "--config", str(config)]
    log = (folder / "serve.log").open("w", encoding="utf-8")  # the server's warnings, for a step that fails
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"emostream serve did not start: {line!r}")
    return proc, int(found.group(1))


async def measure(
    model: str,
    steps: tuple[int, ...],
    step_s: float,
    folder: Path,
    arrivals_per_s: float = ARRIVALS_PER_S,
    *,
    workers: int | None = None,
) -> list[StepResult]:
    prepared = prepare(call_audio(step_s + (max(steps) - 1) / arrivals_per_s + 2.0))
    proc, port = start_server(model, folder, workers)
    results: list[StepResult] = []
    try:
        reader, writer = await open_ws(port, "/events")
        received = [0]
        drainer = asyncio.get_running_loop().create_task(drain(reader, writer, received))
        dropped_before = 0.0
        for n in steps:
            client, window = await run_step(port, proc.pid, prepared, n, step_s, arrivals_per_s=arrivals_per_s)
            await wait_idle(port)
            if len(window.metrics) < 2:
                raise RuntimeError(f"--step-seconds {step_s} is too short for a {WARMUP_S} s warm-up")
            before, after = window.metrics
            wall = window.wall_s[1] - window.wall_s[0]
            cpu = window.server_cpu_s[1] - window.server_cpu_s[0]
            loop_cpu = window.loop_cpu_s[1] - window.loop_cpu_s[0]
            ccpu = window.client_cpu_s[1] - window.client_cpu_s[0]
            hops = int(
                sum(after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.startswith("emostream_hops_total"))
            )
            dropped_total = parse_metrics(metrics_text(port)).get("emostream_dropped_audio_seconds_total", 0.0)
            dropped = dropped_total - dropped_before
            dropped_before = dropped_total
            step = StepResult(
                calls=n,
                audio_s=n * wall,
                wall_s=wall,
                server_cpu_s=cpu,
                loop_cpu_s=loop_cpu,
                client_cpu_s=ccpu,
                hops=hops,
                p99_ms=histogram_quantile(before, after, 0.99),
                p50_ms=histogram_quantile(before, after, 0.50),
                dropped_audio_s=round(dropped, 3),
                disconnected=client["disconnected"],
                late_sends=client["late_ticks"],
                ramp_s=client["ramp_s"],
            )
            results.append(step)
            print(
                f"  {model}: {n} calls: p99 <= {step.p99_ms} ms, p50 <= {step.p50_ms} ms, "
                f"dropped {step.dropped_audio_s} s, server CPU {cpu:.1f} s "
                f"({step.cpu_per_call_s:.4f} s per call-second: event loop {step.loop_cpu_per_call_s:.4f}, "
                f"workers {step.cpu_per_call_s - step.loop_cpu_per_call_s:.4f}), "
                f"client CPU {ccpu:.1f} s, "
                f"calls started over {step.ramp_s:.1f} s, "
                f"window {wall:.1f} s -> {'holds' if step.holds else 'does not hold'}",
                flush=True,
            )
            if not step.holds:
                warnings = [ln for ln in (folder / "serve.log").read_text().splitlines() if " INFO " not in ln]
                for line in warnings[-8:]:  # why the step failed, as far as the server says
                    print(f"    server: {line}", file=sys.stderr)
                break
        drainer.cancel()
        writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


async def wait_idle(port: int, timeout_s: float = 30.0) -> None:
    """Wait until the server has ended every call (their summaries are made)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if parse_metrics(metrics_text(port)).get("emostream_active_calls", 0.0) == 0:
            return
        await asyncio.sleep(0.2)


def _two_cpus() -> set[int] | None:
    """Allow this process and the server two CPUs (the harness pins to one); returns the old set."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(range(os.cpu_count() or 1))[:2]))
    return old


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Largest number of real-time calls held per model, CPU per call."""
    quick = bool(getattr(args, "quick", False))
    step_s = getattr(args, "step_seconds", None) or (8.0 if quick else 20.0)
    models = available_models(getattr(args, "models", None))
    if not models:
        return result("serve", [figure("calls held", "no model", target=0.0, note="pass --model")])
    requested = getattr(args, "steps", None)
    old = _two_cpus()
    figures: list[dict[str, Any]] = []
    arrivals = float(getattr(args, "arrivals_per_s", None) or ARRIVALS_PER_S)
    details: dict[str, Any] = {
        "step_seconds": step_s,
        "arrivals_per_s": arrivals,
        "cpus": 2,
        "p99_target_ms": P99_TARGET_MS,
        "workers": "default" if getattr(args, "workers", None) is None else args.workers,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
            for model in models:
                steps = tuple(requested) if requested else (QUICK_STEPS if quick else STEPS).get(model, STEPS["fast"])
                load_before = os.getloadavg()[0]
                steps_run = asyncio.run(
                    measure(model, steps, step_s, Path(tmp), arrivals, workers=getattr(args, "workers", None))
                )
                held = [s for s in steps_run if s.holds]
                best = held[-1] if held else None
                first_fail = next((s for s in steps_run if not s.holds), None)
                reason = _why(first_fail) if first_fail else "every step held (try larger steps)"
                target = CALLS_TARGET_FAST if model == "fast" else None
                figures.append(
                    figure(
                        f"calls held, {model} (p99 hop latency <= 100 ms, no drops)",
                        best.calls if best else 0,
                        "calls",
                        target=target,
                        better="higher",
                        note=f"first failing step: {reason}",
                    )
                )
                # CPU at the largest step that held (a step that fell behind left work undone in its window)
                measured = best or (max(steps_run, key=lambda st: st.calls) if steps_run else None)
                if measured is not None:
                    per_call = measured.cpu_per_call_s
                    client = measured.client_cpu_s / max(measured.audio_s, 1e-9)
                    figures.append(
                        figure(
                            f"server CPU per call-second, {model}",
                            round(per_call, 4),
                            "CPU s/s",
                            note=f"server + its workers at {measured.calls} calls (event loop "
                            f"{measured.loop_cpu_per_call_s:.4f}); the load client: {client:.4f}",
                        )
                    )
                    figures.append(
                        figure(
                            f"calls 2 idle cores could carry (CPU only), {model}",
                            int(2.0 / (per_call + client)),
                            "calls",
                            note="2 / (server + client CPU per call-second): a projection, not a latency measurement",
                        )
                    )
                details[model] = {
                    "steps": [
                        s.__dict__
                        | {
                            "cpu_per_call_s": round(s.cpu_per_call_s, 5),
                            "loop_cpu_per_call_s": round(s.loop_cpu_per_call_s, 5),
                        }
                        for s in steps_run
                    ],
                    "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    return result("serve", figures, details)


def _why(step: StepResult) -> str:
    reasons = []
    if step.p99_ms is None or step.p99_ms > P99_TARGET_MS:
        reasons.append(f"p99 {step.p99_ms} ms")
    if step.dropped_audio_s:
        reasons.append(f"{step.dropped_audio_s} s dropped")
    if step.disconnected:
        reasons.append(f"{step.disconnected} disconnected")
    return f"{step.calls} calls ({', '.join(reasons) or 'no hops'})"


def main(argv: list[str] | None = None) -> int:
    """Standalone run: print the figures and the steps."""
    from benchmarks.common import print_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve", description=__doc__.split("\n")[0])
    parser.add_argument("--model", dest="models", action="append", help="model name or .json path")
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], help="calls per step, e.g. 25,50")
    parser.add_argument("--step-seconds", type=float, help="seconds of audio per call and step (default 20)")
    parser.add_argument(
        "--arrivals-per-s",
        type=float,
        help=f"new calls per second while a step ramps up (default {ARRIVALS_PER_S:g}; 1000 = all at once)",
    )
    parser.add_argument("--workers", type=int, help="the server's analysis processes (default: its own default, 2)")
    parser.add_argument("--quick", action="store_true")
    res = run(parser.parse_args(argv))
    print_results([res])
    print(json.dumps(res["details"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
