"""`switchboard worker`'s pool: worker processes grown and shrunk with the backlog."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from bot.capacity import Bounds, decide
from bot.reports import current_month, report_time
from bot.settings import Settings
from storage.keys import Keys
from storage.queue import RqScheduler, RqWorkerPool

log = logging.getLogger("switchboard.worker")


def _member(config: str | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bot.runtime.cli"]
    if config:
        command += ["--config", config]
    # Same process group: stopping the pool's group stops every member with it.
    return subprocess.Popen([*command, "worker", "--single"])


def run_pool(settings: Settings, pool: RqWorkerPool, config: str | None) -> int:
    low, high, per_worker, interval = settings.workers
    bounds = Bounds(low, high, per_worker)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler = RqScheduler(settings.redis, Keys(settings.redis_prefix))
    period = current_month()
    scheduler.schedule_reports(period, report_time(period))  # once per period, by its id
    members: list[subprocess.Popen[bytes]] = []
    leaving: list[subprocess.Popen[bytes]] = []
    short_looks = 0
    while not stopping:
        members = [m for m in members if m.poll() is None]
        leaving = [m for m in leaving if m.poll() is None]
        try:
            depth = pool.depth()
        except Exception as exc:  # Redis away: keep what runs, look again later
            log.warning("cannot read the queue's depth: %s", exc)
            time.sleep(interval)
            continue
        decision = decide(depth, len(members), bounds, short_looks)
        short_looks = short_looks + 1 if decision.wants_fewer and not \
            decision.changes(len(members)) else 0
        if decision.changes(len(members)):
            log.info("worker pool: %s", decision.reason)
        while len(members) < decision.workers:
            members.append(_member(config))
        while len(members) > decision.workers:
            # RQ's warm shutdown: the member finishes its job, then leaves.
            newest = members.pop()
            newest.send_signal(signal.SIGTERM)
            leaving.append(newest)
        time.sleep(interval)
    log.info("worker pool stopping: %d member(s) finish their jobs", len(members))
    for member in members + leaving:
        if member.poll() is None:
            member.send_signal(signal.SIGTERM)
    for member in members + leaving:
        try:
            member.wait(timeout=60)
        except subprocess.TimeoutExpired:
            member.kill()
    return 0
