"""RQ job functions: importable, plain arguments (ids), safe to run twice.

A worker process keeps one runtime (its Redis connections, Slack client, Matrix session,
sender authenticator) on one event loop for every job it runs: starting one per job
cost more than the job itself. `switchboard worker` says which configuration it is
(``configure``) before it takes the first job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.reports import report_time
from bot.runtime.app import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Held:
    """This process's event loop and runtime, made on the first job."""

    config_file: str | None = None
    loop: asyncio.AbstractEventLoop | None = None
    runtime: Runtime | None = None


def configure(config_file: str | None) -> None:
    """The configuration file the jobs of this process load (`--config`)."""
    _Held.config_file = config_file


def shutdown() -> None:
    """Close the runtime and its loop (the worker is leaving)."""
    loop, runtime = _Held.loop, _Held.runtime
    _Held.loop = _Held.runtime = None
    if loop is None or loop.is_closed():
        return
    try:
        if runtime is not None:
            loop.run_until_complete(runtime.close())
    finally:
        loop.close()


def _run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    if _Held.loop is None or _Held.loop.is_closed():
        _Held.loop = asyncio.new_event_loop()

    async def go() -> T:
        if _Held.runtime is None:
            # The run process holds the Matrix bot's keys; a worker posts plaintext rooms.
            _Held.runtime = await Runtime.start(Settings.load(config_file=_Held.config_file),
                                                holds_matrix_keys=False)
            log.info("worker runtime ready (settings from %s); kept for every job",
                     _Held.config_file or "the environment")
        return await work(_Held.runtime)

    task = _Held.loop.create_task(go())
    try:
        return _Held.loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            # Cut off from outside (RQ's job timeout is a signal): the loop's state is
            # not to be trusted; the next job starts a fresh one.
            task.cancel()
            _Held.loop, _Held.runtime = None, None
        raise


async def _retry(runtime: Runtime, delivery_id: str) -> str:
    """A queued delivery's turn (in chat or by email: the lifecycle tells them apart)."""
    return type(await runtime.replies.retry(delivery_id)).__name__


def retry_delivery(delivery_id: str) -> str:
    """One scheduled presence check of a queued delivery; returns what happened."""
    outcome = _run(lambda runtime: _retry(runtime, delivery_id))
    log.info("retry of %s: %s", delivery_id, outcome)
    return outcome


async def _reports(runtime: Runtime, period: str) -> str:
    assert runtime.reports is not None
    outcomes = await runtime.reports.run(period)
    if runtime.scheduler is not None:
        following = report_time(period).strftime("%Y-%m")
        await asyncio.to_thread(runtime.scheduler.schedule_reports, following,
                                report_time(following))
    return "; ".join(
        f"{o.customer}: {o.charges.total} {o.charges.currency}"
        f"{', emailed' if o.emailed else ''}"
        f"{', debited' if o.debited is not None else ''}"
        f"{''.join(', warning: ' + w for w in o.warnings)}" for o in outcomes)


def charge_reports(period: str) -> str:
    """Every customer's report for ``period``; then the next month's is scheduled."""
    summary = _run(lambda runtime: _reports(runtime, period))
    log.info("charge reports for %s: %s", period, summary)
    return summary
