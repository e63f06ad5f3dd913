"""The contract suite: every test here runs once against the in-memory stores and once
against Redis (the real redis-server), so the two keep the same promises."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from storage.memory import MemoryStore
from storage.store import Store

AnyStore = Store | MemoryStore


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AnyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    services = request.getfixturevalue("services")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    s = Store.open(services.redis_url, prefix)
    yield s
    keys = [k async for k in s.redis.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await s.redis.delete(*keys)
    await s.close()
