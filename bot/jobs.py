"""RQ job functions: importable, plain arguments (ids), safe to run twice."""

from __future__ import annotations

import asyncio
import logging

from bot.app import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)


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
