"""The contract suite: every test here runs once against the in-memory stores and once
against Redis (the real redis-server), so the two keep the same promises."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.memory import MemoryStore
from storage.store import Store
from tests.conftest import redis_store

AnyStore = Store | MemoryStore


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AnyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with redis_store(request.getfixturevalue("services")) as s:
        yield s
