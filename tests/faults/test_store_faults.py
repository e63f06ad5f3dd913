"""A Redis that goes away mid-operation: a clear error, nothing half-written."""

from __future__ import annotations

import pytest

from bot.errors import StoreUnavailable
from bot.model import Address, Delivery, DeliveryState, EntryKind, HistoryEntry, Provenance
from storage.store import Store
from tests.servers import redis_server

pytestmark = pytest.mark.integration

ALICE = Address.email("alice@example.com")
BOB = Address.slack("T0TEAM1", "U0BOB")


async def test_redis_stopping_and_coming_back() -> None:
    with redis_server(appendonly=True) as redis:
        store = Store.open(redis.url, "sb")
        await store.address_book.link(ALICE, provenance=Provenance.IMPORTED, verified=True)
        await store.history.append(HistoryEntry("e1", "c1", EntryKind.EMAIL, ALICE, (BOB,),
                                                1.0, "hello"))
        await store.deliveries.create(Delivery("d1", "c1", BOB, ALICE, "hi",
                                               DeliveryState.PENDING, 1.0))
        redis.stop()

        with pytest.raises(StoreUnavailable) as down:
            await store.address_book.link(BOB, provenance=Provenance.LEARNED, verified=True,
                                          to=ALICE)
        assert f"127.0.0.1:{redis.port}" in str(down.value)
        assert "redis-server" in str(down.value)
        with pytest.raises(StoreUnavailable):
            await store.deliveries.transition("d1", DeliveryState.DELIVERED)
        with pytest.raises(StoreUnavailable):
            await store.history.conversation("c1")

        redis.start()
        identity = await store.address_book.resolve(ALICE)
        assert identity is not None and identity.addresses() == [ALICE]
        delivery = await store.deliveries.get("d1")
        assert delivery is not None and delivery.state is DeliveryState.PENDING
        assert len(delivery.changes) == 1
        assert await store.history.count("c1") == 1
        await store.close()
