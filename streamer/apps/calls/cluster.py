"""The call batch on Ray (``emostream calls DIR --ray [ADDRESS]``, extra ``[cluster]``).

One Ray task (1 CPU) per call. A task reads its recording **by path**, so every node must
see the inputs at the same absolute path (an NFS or other shared mount; relative inputs are
made absolute on the driver), analyses it with the :class:`~emostream.apps.calls.analysis.CallAnalyzer`
its worker process keeps between tasks (the model is loaded once per worker) and returns
the summary and the PNG bytes. The driver (this process) writes every output, so only it
needs ``--out``; finding the calls, resuming, the progress bar, per-call errors and the
reports are :func:`~emostream.apps.calls.batch.run_batch`'s, as with ``--jobs``.

``--ray`` alone starts a local Ray instance bound to 127.0.0.1 (``--jobs N`` = its CPUs, default
all) and stops it at the end; ``--ray auto`` joins the cluster this machine is a node of,
``--ray HOST:6379`` a head node's GCS address and ``--ray ray://HOST:10001`` a Ray Client server
(there ``--jobs N`` caps the calls analysed at once). Ctrl-C or SIGTERM cancels the queued and
running tasks (``ray.cancel``) and the batch ends like an interrupted ``--jobs`` run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emostream.apps.calls.analysis import CallAnalyzer, CallJob
from emostream.apps.calls.batch import BatchOptions, Outcome, analyse_call, save_call
from emostream.config import apply_overrides
from emostream.errors import ConfigError, EmoStreamError
from emostream.inference.metadata import ModelMetadata, resolve_model

__all__ = ["CLUSTER_HINT", "RayExecutor", "RaySettings", "require_ray"]

CLUSTER_HINT = "install them with `pip install 'emostream[cluster]'`"
LOCAL, AUTO, CLIENT_SCHEME = "local", "auto", "ray://"
ADDRESS_HELP = (
    "expected nothing (a local Ray instance), `auto` (the cluster this machine is a node of), HOST:PORT (the "
    "head node's address that `ray start --head` prints, port 6379 by default) or ray://HOST:10001 (Ray Client)"
)
ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own: the cluster `auto` means
ADDRESS_FILE = "ray_current_cluster"  # in Ray's temp folder: the address of the cluster `ray start` last started
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"  # "0": no usage report to the internet
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0" (read when ray is imported): Ray uses 127.0.0.1 as the node IP
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CONNECT_TIMEOUT_S = 5.0  # reachability check of a HOST:PORT address before ray.init (which would retry for minutes)
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # results are small (a summary and a PNG per call)
POLL_S = 0.5  # ray.wait timeout: how soon Ctrl-C / SIGTERM is seen
IN_FLIGHT_PER_CPU = 2  # tasks submitted per cluster CPU: the next call is queued while the driver writes results
TASK_RETRIES = 1  # a task whose worker or node died is run once more before the call counts as failed


@dataclass(frozen=True, kw_only=True)
class RaySettings:
    """Where to run: ``address`` (``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``) and ``max_jobs``.

    ``max_jobs``: the local instance's CPUs, or the most calls analysed at once on a cluster; None = every CPU.
    """

    address: str = LOCAL
    max_jobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_jobs is not None and self.max_jobs < 1:
            raise ConfigError(f"--jobs is {self.max_jobs}; expected 1 or more calls at once (or none: every CPU)")
        if self.address not in (LOCAL, AUTO):
            _host_port(self.address)  # raises ConfigError for anything else

    @property
    def local(self) -> bool:
        """True when this run starts (and stops) its own Ray instance."""
        return self.address == LOCAL

    @property
    def target(self) -> str:
        """The address to connect to: ``auto`` resolved as Ray resolves it (``$RAY_ADDRESS``, else the address
        of the cluster ``ray start`` last started on this machine; ``auto`` when there is neither)."""
        if self.address != AUTO:
            return self.address
        found = os.environ.get(ADDRESS_ENV) or _read_text(_ray_temp_dir() / ADDRESS_FILE)
        if found and found not in (LOCAL, AUTO):
            _host_port(found)
            return found
        return AUTO

    def check_reachable(self) -> None:
        """ConfigError unless something answers at a HOST:PORT address (ray.init would retry for minutes)."""
        target = self.target
        if target in (LOCAL, AUTO):
            return
        host, port = _host_port(target)
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"--ray {self.address}: nothing answers at {host}:{port} ({reason}); check that the Ray head node "
                "runs there (`ray start --head`) and the port is open, or use --ray auto on a node of the cluster"
            ) from exc

    @property
    def loopback(self) -> bool:
        """True for a local instance or a cluster on this machine's loopback interface."""
        target = self.target
        return target == LOCAL or (target != AUTO and _host_port(target)[0] in LOOPBACK_HOSTS)


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; ConfigError if it is neither."""
    host, _, port = address.removeprefix(CLIENT_SCHEME).rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray {address!r} is not a Ray address; {ADDRESS_HELP}. To name the inputs first, write "
            "`emostream calls DIR --ray` or `--ray=ADDRESS`"
        )
    return host, int(port)


def _ray_temp_dir() -> Path:
    """Ray's temporary folder, as Ray chooses it (``$RAY_TMPDIR``, ``$TMPDIR`` on Linux, else /tmp) + ``ray``."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(base or ("/tmp" if sys.platform.startswith(("linux", "darwin")) else tempfile.gettempdir())) / "ray"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def require_ray() -> None:
    """ConfigError (exit 2) with the install command when ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"`emostream calls --ray` needs the cluster extras (ray is not installed); {CLUSTER_HINT}")


def _import_ray(settings: RaySettings) -> Any:
    os.environ.setdefault(USAGE_STATS_ENV, "0")
    if settings.loopback and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # a local instance listens on 127.0.0.1 only
    require_ray()
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ConfigError(
            f"`emostream calls --ray` needs the cluster extras (importing ray failed: {exc}); {CLUSTER_HINT}"
        ) from exc


@contextmanager
def connected(settings: RaySettings) -> Iterator[Any]:
    """The ``ray`` module, connected as ``settings`` say; disconnected (a local instance stopped) afterwards.

    A connection the caller opened already (``ray.is_initialized()``) is used as it is and left open.
    """
    ray = _import_ray(settings)
    if ray.is_initialized():
        yield ray
        return
    settings.check_reachable()
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # worker output stays in Ray's session logs, off the progress bar
        "logging_level": logging.ERROR,
    }
    if settings.local:
        options |= {"num_cpus": settings.max_jobs, "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=settings.target, **options)
    except ConnectionError as exc:
        if settings.target == AUTO:
            hint = "start one with `ray start --head`, or give the head node's address: --ray HOST:6379"
        else:
            hint = (
                "a cluster with token authentication needs RAY_AUTH_MODE=token here too, with its token "
                "(RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            )
        reason = _last_line(exc)
        raise ConfigError(f"--ray {settings.address}: cannot connect to a Ray cluster ({reason}); {hint}") from exc
    finally:
        with suppress(ValueError, TypeError):  # ray.init sets its own SIGTERM handler (sys.exit): the CLI's again
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass
class RayExecutor:
    """Runs the calls as Ray tasks (see the module doc); ``jobs``: CPUs used, known once connected."""

    settings: RaySettings
    jobs: int = 0

    def run(self, todo: Sequence[CallJob], options: BatchOptions) -> Generator[Outcome, None, None]:
        """Yield each call's outcome as its task finishes; cancel every task on KeyboardInterrupt or close()."""
        if not todo:
            return
        with connected(self.settings) as ray:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if cpus < 1:
                raise ConfigError(f"--ray {self.settings.address}: the Ray cluster has no CPUs for the calls")
            self.jobs = min(cpus, self.settings.max_jobs or cpus)
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
            print(f"emostream: Ray: {self.jobs} call(s) at once on {nodes} node(s)", file=sys.stderr, flush=True)
            # --jobs N: N tasks at most, so N calls at once on any cluster; else two per CPU, the next one queued
            in_flight = self.jobs if self.settings.max_jobs else IN_FLIGHT_PER_CPU * cpus
            yield from _run_tasks(ray, todo, options, in_flight)


def _run_tasks(
    ray: Any, todo: Sequence[CallJob], options: BatchOptions, in_flight: int
) -> Generator[Outcome, None, None]:
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_analyse_on_worker)
    shipped = ray.put((_for_workers(options), _model_sha256(options)))
    waiting = iter(todo)
    running: dict[Any, CallJob] = {}
    try:
        while True:
            for job in itertools.islice(waiting, max(0, in_flight - len(running))):
                running[task.remote(dataclasses.replace(job, path=job.path.absolute()), shipped)] = job
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                yield _saved(ray, ref, running.pop(ref), options)
    except BaseException:  # Ctrl-C, SIGTERM (the CLI's KeyboardInterrupt) or the batch stopping: no task goes on
        _cancel_unfinished(ray, list(running))
        raise


def _cancel_unfinished(ray: Any, refs: list[Any]) -> None:
    """Force-cancel the tasks of ``refs`` that have not finished.

    A finished task is left alone: force-cancelling a task whose reply is arriving made Ray
    2.60's core worker abort the driver ("Tried to complete task that was not pending"), so the
    interrupted batch exited 1 with Ray's stack dump instead of 130/143.
    """
    with suppress(Exception):
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in refs:
        with suppress(Exception):
            ray.cancel(ref, force=True)


def _saved(ray: Any, ref: Any, job: CallJob, options: BatchOptions) -> Outcome:
    """Write a finished task's call (in the driver), or turn the task's failure into this call's error."""
    try:
        summary, png, error = ray.get(ref)
    except ray.exceptions.RayError as exc:  # the worker or its node died twice, or the task could not run
        cause = getattr(exc, "cause", None) or exc
        return (
            job,
            None,
            (
                f"the Ray task failed ({type(cause).__name__}: {_last_line(cause)}); the call was not analysed: run "
                "the batch again (finished calls are kept)"
            ),
        )
    # the worker read the absolute path; the summary and messages name the input as given (as with --jobs)
    if summary is None:
        return job, None, (error or "").replace(str(job.path.absolute()), str(job.path))
    summary["input"]["path"] = str(job.path)
    return save_call(job, summary, png, options.out_dir)


def _last_line(exc: BaseException) -> str:
    """The last line of an exception's message (Ray's messages may carry a remote traceback)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]


def _for_workers(options: BatchOptions) -> BatchOptions:
    """``options`` with a model path made absolute (the workers' current folder is not the driver's)."""
    name = options.cfg.model.name
    if Path(name).suffix not in (".json", ".tflite"):
        return options  # a shipped model: each node's emostream installation has it
    cfg = apply_overrides(options.cfg, {"model": {"name": str(Path(name).absolute())}})
    return dataclasses.replace(options, cfg=cfg)


def _model_sha256(options: BatchOptions) -> str:
    return ModelMetadata.load(resolve_model(options.cfg.model.name)).sha256


_WORKER: tuple[str, CallAnalyzer] | None = None  # in a Ray worker process: (settings fingerprint, its analyzer)


def _analyse_on_worker(
    job: CallJob, shipped: tuple[BatchOptions, str]
) -> tuple[dict[str, Any] | None, bytes | None, str | None]:
    """The Ray task: analyse one call with this worker's analyzer (made on its first call); see analyse_call."""
    global _WORKER  # noqa: PLW0603 - one analyzer (and model) per worker process, kept between tasks
    options, model_sha256 = shipped
    if _WORKER is None or _WORKER[0] != options.fingerprint:
        try:
            here = _model_sha256(options)
            if here != model_sha256:
                raise ConfigError(
                    f"its model file differs from the driver's (sha256 {here[:12]}, expected {model_sha256[:12]}); "
                    "install the same emostream version and model files on every node"
                )
            _WORKER = (options.fingerprint, CallAnalyzer(options.cfg, options.bin_s, options.fingerprint))
        except EmoStreamError as exc:
            return None, None, f"the Ray worker on {socket.gethostname()} cannot analyse calls: {exc}"
    return analyse_call(_WORKER[1], job, png=options.png)
