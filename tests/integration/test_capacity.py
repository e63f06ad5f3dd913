"""`switchboard worker` grows its pool of RQ workers as the backlog grows, and shrinks it
when the backlog is gone; each decision is logged with its figures."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import aiohttp
import pytest
from rq import Queue, Worker

from storage.keys import Keys
from storage.queue import RETRY_JOB, sync_client
from tests.bridge import running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually
from tests.servers import start_switchboard
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


async def test_the_worker_pool_grows_with_the_backlog_then_shrinks(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    async with running_bridge(services, slack, http) as bridge:
        # Jobs that find no such delivery: quick (a worker keeps its runtime), so the
        # backlog is made large enough to outlast the pool's first looks.
        env = {k: v for k, v in bridge.env.items() if not k.startswith("SWITCHBOARD_MATRIX")}
        env.update(SWITCHBOARD_ROUTES="", SWITCHBOARD_WORKERS_MIN="1", SWITCHBOARD_WORKERS_MAX="3",
                   SWITCHBOARD_WORKERS_JOBS_PER_WORKER="5", SWITCHBOARD_WORKERS_SCALE_INTERVAL="1")
        connection = sync_client(env["SWITCHBOARD_REDIS_URL"])
        queue = Queue(Keys(env["SWITCHBOARD_REDIS_PREFIX"]).queue_name(), connection=connection)

        def workers() -> int:
            return int(Worker.count(queue=queue))

        log = tmp_path / "pool.log"
        pool = start_switchboard("worker", env, log, new_session=True)
        try:
            await eventually(lambda: _at_least(workers, 1), what="the pool's first worker")
            queue.enqueue_many([Queue.prepare_data(
                RETRY_JOB, (f"d-none-{uuid.uuid4().hex[:8]}-{i}",), result_ttl=60)
                for i in range(3000)])
            await eventually(lambda: _at_least(workers, 3), within=30,
                             what="the pool to grow to its ceiling of 3")
            await eventually(lambda: _empty(queue), within=120, what="the backlog to be done")
            await eventually(lambda: _at_most(workers, 1), within=60,
                             what="the pool to shrink back to its floor of 1")
            text = log.read_text()
            assert "worker pool: grow 1 -> 3:" in text and "5 per worker, bounds 1..3" in text
            assert "worker pool: shrink 3 -> 2:" in text and "shrink 2 -> 1:" in text
        finally:
            os.killpg(pool.pid, signal.SIGTERM)
            await asyncio.to_thread(pool.wait, 60)
        assert pool.returncode == 0, log.read_text()[-3000:]
        await eventually(lambda: _at_most(workers, 0), what="every member gone after the stop")


async def _at_least(count: object, n: int) -> bool:
    return await asyncio.to_thread(count) >= n  # type: ignore[arg-type, operator]


async def _at_most(count: object, n: int) -> bool:
    return await asyncio.to_thread(count) <= n  # type: ignore[arg-type, operator]


async def _empty(queue: Queue) -> bool:
    return await asyncio.to_thread(lambda: queue.count == 0)
