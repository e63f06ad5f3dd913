"""Composition root: the one place that picks concrete adapters and stores for the core."""

from __future__ import annotations

from bot.doctor import Probe
from bridges.email.probe import probe_imap, probe_smtp
from bridges.matrix.probe import probe_matrix
from bridges.slack.probe import probe_slack
from storage.health import probe_redis


def doctor_probes() -> list[Probe]:
    return [probe_redis, probe_imap, probe_smtp, probe_slack, probe_matrix]
