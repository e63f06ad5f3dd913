"""Background jobs on RQ: what the core schedules, and the workers that run it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from redis import Redis as SyncRedis
from redis import exceptions as redis_errors
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel
from rq import Queue, Retry, SimpleWorker, Worker
from rq.job import Job, JobStatus

from bot.errors import StoreUnavailable
from bot.settings import RedisTarget
from storage.connection import (
    FAILOVER_PATIENCE_TRIES,
    RETRIED,
    connection_options,
    describe,
    sentinel_options,
    target_of,
)
from storage.keys import Keys

RETRY_JOB = "bot.runtime.jobs.retry_delivery"
REPORTS_JOB = "bot.runtime.jobs.charge_reports"
log = logging.getLogger(__name__)
OVERDUE = 5.0  # seconds past its time before a scheduled retry counts as lost
HEARTBEAT = 5  # seconds between a running job's heartbeats (RQ's job monitoring)
WORKER_TTL = 60  # seconds a worker's registration lives unrenewed (its dequeue: 45 s)


def sync_client(where: RedisTarget | str) -> SyncRedis:
    """RQ's connection, to the same Redis as the store's (through the same sentinels).
    RQ stores pickled job data: it needs a client that does not decode responses."""
    target = target_of(where)
    options = connection_options(target, decode=False)
    if not target.sentinels:
        return SyncRedis.from_url(target.url, **options)
    # redis-py's synchronous Sentinel is untyped.
    sentinel = SyncSentinel(list(target.sentinels),  # type: ignore[no-untyped-call]
                            sentinel_kwargs=sentinel_options(target))
    client: SyncRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master, redis_class=SyncRedis,
        retry=SyncRetry(ExponentialBackoff(cap=1.0, base=0.05), FAILOVER_PATIENCE_TRIES),
        retry_on_error=RETRIED, **options)
    return client


class RqScheduler:
    """Schedules delivery retries on an RQ queue (workers run them with RQ's scheduler)."""

    def __init__(self, where: RedisTarget | str, keys: Keys) -> None:
        self.where = describe(where)
        self.queue = Queue(keys.queue_name(), connection=sync_client(where))
        self._warned = -60.0

    def capacity(self) -> tuple[int, int]:
        """(jobs waiting, workers alive) on the queue."""
        return self.queue.count, Worker.count(queue=self.queue)

    def _check_capacity(self) -> None:
        # Said at most once a minute: a burst of jobs is one problem, not a thousand.
        if time.monotonic() - self._warned < 60:
            return
        depth, workers = self.capacity()
        if workers == 0 or depth > 50 * workers:
            self._warned = time.monotonic()
        if workers == 0:
            log.warning("a job is queued but no worker is running (%d waiting): start "
                        "`switchboard worker`", depth)
        elif depth > 50 * workers:
            log.warning("the queue is long: %d job(s) waiting for %d worker(s); raise "
                        "SWITCHBOARD_WORKERS_MAX if this lasts", depth, workers)

    def _schedule(self, delivery_id: str, attempt: int, delay: float) -> None:
        job_id = f"retry-{delivery_id}-{attempt}"
        at = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            self._check_capacity()
            # A fixed job id per attempt: scheduling the same attempt twice runs it once.
            if self.queue.fetch_job(job_id) is not None:
                return
            self.queue.enqueue_at(at, RETRY_JOB, delivery_id, job_id=job_id,
                                  retry=Retry(max=3, interval=[10, 30, 60]),
                                  result_ttl=3600, failure_ttl=7 * 86400)
        except (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise StoreUnavailable(f"{self.where} is unreachable while "
                                   f"scheduling a retry: {exc}") from exc

    def schedule_reports(self, period: str, at: datetime | None = None,
                         job_id: str | None = None) -> str:
        """The charge-report job for ``period``, at ``at`` (now when None). Scheduled
        reports have one id per period, so scheduling twice runs once."""
        job_id = job_id or f"reports-{period}"
        try:
            self._check_capacity()
            if self.queue.fetch_job(job_id) is not None:
                return job_id
            if at is None:
                self.queue.enqueue(REPORTS_JOB, period, job_id=job_id, result_ttl=30 * 86400,
                                   failure_ttl=30 * 86400, job_timeout=3600)
            else:
                self.queue.enqueue_at(at, REPORTS_JOB, period, job_id=job_id,
                                      result_ttl=30 * 86400, failure_ttl=30 * 86400,
                                      job_timeout=3600)
        except (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise StoreUnavailable(f"{self.where} is unreachable while "
                                   f"scheduling charge reports: {exc}") from exc
        return job_id

    async def depth(self) -> int:
        """Jobs waiting to run (scheduled ones not counted until they are due)."""
        return int(await asyncio.to_thread(lambda: self.queue.count))

    async def schedule_retry(self, delivery_id: str, attempt: int, delay: float) -> None:
        await asyncio.to_thread(self._schedule, delivery_id, attempt, delay)


def _abandoned(queue: Queue, job: Job, live_workers: set[str]) -> bool:
    status = job.get_status(refresh=True)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return True
    if status == JobStatus.SCHEDULED:
        # Overdue: the scheduler that would enqueue it died with its worker (its lock
        # outlives it for a while). Running the retry twice is harmless.
        due = queue.scheduled_job_registry.get_scheduled_time(job)
        return due is not None and datetime.now(UTC) - due > timedelta(seconds=OVERDUE)
    if status != JobStatus.STARTED:
        return False
    # A running job is heartbeated every HEARTBEAT seconds by its worker: silence means the
    # worker died with it (SIGKILL of the whole tree leaves its registration for minutes).
    beat = job.last_heartbeat
    silent = beat is not None and datetime.now(UTC) - beat.replace(tzinfo=UTC) > timedelta(
        seconds=3 * HEARTBEAT)
    return job.worker_name not in live_workers or silent


class RqWorkerPool:
    """`switchboard worker`: RQ workers with RQ's scheduler, plus a sweep that gives every
    queued delivery a pending retry job, so a worker killed mid-job loses nothing."""

    def __init__(self, where: RedisTarget | str, keys: Keys) -> None:
        self.connection = sync_client(where)
        self.queue = Queue(keys.queue_name(), connection=self.connection)

    def sweep(self, queued: list[tuple[str, int]]) -> int:
        """``queued``: (delivery id, attempt) pairs; returns how many jobs it re-made."""
        live = {w.name for w in Worker.all(queue=self.queue)}
        remade = 0
        for delivery_id, attempt in queued:
            job = self.queue.fetch_job(f"retry-{delivery_id}-{attempt}")
            if job is not None and not _abandoned(self.queue, job, live):
                continue
            self.queue.enqueue(RETRY_JOB, delivery_id,
                               job_id=f"retry-{delivery_id}-{attempt}-swept-{remade}"
                                      f"-{int(datetime.now(UTC).timestamp())}",
                               retry=Retry(max=3, interval=[10, 30, 60]), result_ttl=3600)
            remade += 1
        return remade

    def depth(self) -> int:
        return int(self.queue.count)

    def workers(self) -> int:
        return int(Worker.count(queue=self.queue))

    def work(self, name: str | None = None, burst: bool = False) -> None:
        # The blocking dequeue stays well within a socket timeout (RQ sets it to the
        # dequeue's plus 10 s): a primary lost without a word is noticed within a minute.
        worker = KeepingWorker([self.queue], connection=self.connection, name=name,
                               worker_ttl=WORKER_TTL)
        worker.work(with_scheduler=True, burst=burst, logging_level="INFO")


class KeepingWorker(SimpleWorker):
    """Runs each job in its own process (no fork per job), so what the jobs keep between
    them (connections, clients, the Matrix session) is made once per worker; a thread
    heartbeats the running job as RQ's forking worker would, so the sweep can tell a
    long job from one lost with a killed worker."""

    # RQ waits up to a minute between tries to reach a Redis it lost; a failover is over
    # in seconds, and the deliveries waiting in the queue should not wait on the worker.
    max_connection_wait_time = 5.0

    def execute_job(self, job: Job, queue: Queue) -> None:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT):
                try:
                    job.heartbeat(datetime.now(UTC), 3 * HEARTBEAT + 60)
                    self.heartbeat()
                except (OSError, redis_errors.RedisError) as exc:
                    log.warning("could not heartbeat job %s: %s", job.id, exc)

        beating = threading.Thread(target=beat, name=f"heartbeat {job.id}", daemon=True)
        beating.start()
        try:
            super().execute_job(job, queue)
        finally:
            done.set()
            beating.join()
