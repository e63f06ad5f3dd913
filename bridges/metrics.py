"""Prometheus metrics: counters the process keeps, and gauges read from Redis at scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bridged = Counter("switchboard_messages_bridged", "Messages carried across",
                               ["direction", "network"], registry=self.registry)
        self.refused = Counter("switchboard_emails_refused", "Emails that could not be bridged",
                               registry=self.registry)
        self.errors = Counter("switchboard_errors", "Failures, by component",
                              ["component"], registry=self.registry)
        self.ingest_lag = Histogram("switchboard_ingest_lag_seconds",
                                    "From the email's Date to its chat post",
                                    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
                                    registry=self.registry)
        self.deliveries = Gauge("switchboard_deliveries", "Deliveries by state", ["state"],
                                registry=self.registry)
        self.queue_depth = Gauge("switchboard_queue_depth", "Jobs waiting in the RQ queue",
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
