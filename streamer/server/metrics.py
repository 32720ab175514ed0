"""The Prometheus metrics of ``emostream serve`` (``GET /metrics``), in a registry of their own.

A registry per server (not prometheus-client's global one), so that servers started in
one process (tests) count apart. Names and labels are listed in ``docs/server.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from emostream.alerts.delivery import AlertDelivery
    from emostream.server.gate import ConnectionGate

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# emostream_calls_ended_total{reason}: a fixed set (a client's close code never becomes a label value)
END_REASONS = ("stop", "disconnected", "idle timeout", "server shutting down", "rejected", "error", "other")


def end_reason_label(reason: str) -> str:
    """The ``reason`` label of a call's end reason (``disconnected (code 4321)`` -> ``disconnected``)."""
    head = reason.split(":", maxsplit=1)[0].strip()
    if head.startswith("disconnected"):
        return "disconnected"
    return head if head in END_REASONS else "other"


class ServerMetrics:
    """Counters, gauges and the hop-latency histogram of one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("emostream_active_calls", "Calls open now", registry=r)
        self.calls = Counter("emostream_calls", "Calls started", ["source"], registry=r)
        self.calls_ended = Counter("emostream_calls_ended", "Calls ended, by how they ended", ["reason"], registry=r)
        self.hops = Counter("emostream_hops", "Analysis hops computed (all channels)", ["analysed"], registry=r)
        self.hop_latency = Histogram(
            "emostream_hop_latency_seconds",
            "From the arrival of the audio that completed a hop to the hop's record being published",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.audio = Counter(
            "emostream_audio_seconds", "Seconds of call audio analysed (per call, all channels)", registry=r
        )
        self.dropped_audio = Counter(
            "emostream_dropped_audio_seconds",
            "Seconds of call audio dropped because the analysis fell [server] max_backlog_s behind",
            registry=r,
        )
        self.alerts = Counter("emostream_alerts", "Alert events", ["state"], registry=r)
        self.rejected = Counter(
            "emostream_rejected_connections",
            "Connections refused or closed for bad input, by reason",
            ["reason"],
            registry=r,
        )
        self.subscribers = Gauge(
            "emostream_event_subscribers", "Open /events connections (and /ingest echoes)", registry=r
        )
        self.events_dropped = Counter(
            "emostream_events_dropped",
            "Records not sent to a slow /events subscriber (its queue was full)",
            registry=r,
        )
        self.summaries = Counter(
            "emostream_summaries_written", "Call summaries written to [server] summary_dir", registry=r
        )
        self.worker_restarts = Counter(
            "emostream_worker_restarts", "Analysis worker processes started again after one stopped", registry=r
        )
        self.summary_failures = Counter(
            "emostream_summary_write_failures",
            "Call summaries that could not be written to [server] summary_dir (disk full, permissions)",
            registry=r,
        )
        self._live = _LiveCollector()
        r.register(self._live)

    def watch(self, *, gate: ConnectionGate | None = None, delivery: AlertDelivery | None = None) -> None:
        """Read these at every scrape: the unauthenticated connections, the alert delivery counts."""
        self._live.gate = gate
        self._live.delivery = delivery

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Figures read when /metrics is scraped: unauthenticated connections, alert deliveries by outcome."""

    def __init__(self) -> None:
        self.gate: ConnectionGate | None = None
        self.delivery: AlertDelivery | None = None

    def collect(self) -> Iterator[Metric]:
        unauthenticated = GaugeMetricFamily(
            "emostream_unauthenticated_connections",
            "Connections open now that have not shown a token yet ([server] max_unauthenticated at most)",
        )
        unauthenticated.add_metric([], len(self.gate) if self.gate is not None else 0)
        yield unauthenticated
        deliveries = CounterMetricFamily(
            "emostream_alert_deliveries",
            "Alert events handed to [alerts_output], by outcome (delivered, failed after its retries, dropped "
            "because the queue was full)",
            labels=["outcome"],
        )
        stats = self.delivery.dispatcher.stats if self.delivery is not None else None
        for outcome in ("delivered", "failed", "dropped"):
            deliveries.add_metric([outcome], getattr(stats, outcome) if stats is not None else 0)
        yield deliveries
