"""RQ job functions: importable, plain arguments (ids), safe to run twice."""

from __future__ import annotations

import asyncio
import logging

from bot.app import Runtime
from bot.reports import report_time
from bot.settings import Settings

log = logging.getLogger(__name__)


def charge_reports(period: str) -> str:
    """Every customer's report for ``period``; then the next month's is scheduled."""

    async def run() -> str:
        settings = Settings.load()
        runtime = await Runtime.start(settings)
        try:
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
        finally:
            await runtime.close()

    summary = asyncio.run(run())
    log.info("charge reports for %s: %s", period, summary)
    return summary


def retry_delivery(delivery_id: str) -> str:
    """One scheduled presence check of a queued delivery; returns what happened."""

    async def run() -> str:
        runtime = await Runtime.start(Settings.load())
        try:
            outcome = await runtime.retry(delivery_id)
            log.info("retry of %s: %s", delivery_id, outcome)
            return outcome
        finally:
            await runtime.close()

    return asyncio.run(run())
