"""Prometheus metrics of the service (`GET /metrics`): requests, latency, queue depth, failures by reason.

Every app has its own registry, so that several apps (tests, benchmarks) can live in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .pool import BoundedPool

# Seconds; localization takes tens of milliseconds on a GPU to seconds on a small CPU.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

# The `reason` label of hierloc_failures_total: a fixed set, never text from a request.
FAILURE_REASONS = ("bad_request", "unauthorized", "not_found", "method_not_allowed", "payload_too_large",
                   "unsupported_media_type", "too_many_pixels", "overloaded", "timeout", "not_localized",
                   "no_retrieval", "no_rerank", "internal")


class ServiceMetrics:
    """The counters, histogram and gauges of one app."""

    def __init__(self, pool: BoundedPool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("hierloc_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("hierloc_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.failures = Counter("hierloc_failures", "Requests refused or failed, and queries not localized, by reason",
                                ["reason"], registry=self.registry)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)
        Gauge("hierloc_queue_depth", "Admitted requests waiting for a worker",
              registry=self.registry).set_function(lambda: pool.waiting)
        Gauge("hierloc_in_flight", "Requests running on a worker",
              registry=self.registry).set_function(lambda: pool.running)
        Gauge("hierloc_workers", "Worker threads", registry=self.registry).set(pool.workers)
        Gauge("hierloc_queue_capacity", "Requests that may wait for a worker",
              registry=self.registry).set(pool.queue_size)

    def fail(self, reason: str) -> None:
        """Count one failure (`reason` from FAILURE_REASONS)."""
        self.failures.labels(reason if reason in FAILURE_REASONS else "internal").inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
