"""Prometheus metrics: counters the process keeps, and gauges read from Redis at scrape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.stores import Deliveries

CONTENT_TYPE = CONTENT_TYPE_LATEST


class QueueDepth(Protocol):
    async def depth(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bridged_total = Counter("switchboard_messages_bridged",
                                     "Messages carried across", ["direction", "network"],
                                     registry=self.registry)
        self.refused_total = Counter("switchboard_emails_refused",
                                     "Emails that could not be bridged", registry=self.registry)
        self.errors = Counter("switchboard_errors", "Failures, by component",
                              ["component"], registry=self.registry)
        self.lag = Histogram("switchboard_ingest_lag_seconds",
                                    "From the email's Date to its chat post",
                                    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
                                    registry=self.registry)
        self.deliveries = Gauge("switchboard_deliveries", "Deliveries by state", ["state"],
                                registry=self.registry)
        self.queue_depth = Gauge("switchboard_queue_depth", "Jobs waiting in the RQ queue",
                                 registry=self.registry)
        self.post_wait = Gauge("switchboard_post_wait_seconds",
                               "Seconds posts have waited for a chat network's rate limits "
                               "(Slack's pace per channel, a homeserver's throttling)",
                               ["network"], registry=self.registry)
        self.mailbox_up = Gauge("switchboard_mailbox_connected",
                                "1 while this process reads the mailbox, 0 while it fails to "
                                "(absent: another process reads it)", ["mailbox"],
                                registry=self.registry)

    # The core's Observer.
    def bridged(self, direction: str, network: str) -> None:
        self.bridged_total.labels(direction, network).inc()

    def refused(self) -> None:
        self.refused_total.inc()

    def failed(self, component: str) -> None:
        self.errors.labels(component).inc()

    def ingest_lag(self, seconds: float) -> None:
        self.lag.observe(seconds)

    async def scrape(self, deliveries: Deliveries, queue: QueueDepth | None,
                     waits: Mapping[str, float] | None = None,
                     mailboxes: Mapping[str, bool] | None = None) -> bytes:
        """The Prometheus exposition, with the gauges read from the store now."""
        self.mailbox_up.clear()  # a mailbox another process took over is not this one's
        for mailbox, up in (mailboxes or {}).items():
            self.mailbox_up.labels(mailbox).set(1 if up else 0)
        for network, seconds in (waits or {}).items():
            self.post_wait.labels(network).set(seconds)
        try:
            for state, count in (await deliveries.count_by_state()).items():
                self.deliveries.labels(state.value).set(count)
            if queue is not None:
                self.queue_depth.set(await queue.depth())
        except Exception:
            self.failed("metrics")
        return generate_latest(self.registry)
