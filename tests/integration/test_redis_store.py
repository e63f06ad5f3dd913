"""What only the Redis store can show: its keys, and how it fails when Redis is away."""

from __future__ import annotations

import pytest

from bot.errors import StoreUnavailable
from bot.model import Address, Provenance
from storage.store import Store

pytestmark = pytest.mark.integration

ALICE_MAIL = Address.email("alice@example.com")
ALICE_SLACK = Address.slack("T0TEAM1", "U0ALICE")


async def test_unlinking_every_address_leaves_no_identity_behind(store: Store) -> None:
    book = store.address_book
    await book.link(ALICE_MAIL, provenance=Provenance.IMPORTED, verified=True)
    await book.link(ALICE_SLACK, provenance=Provenance.LEARNED, verified=True, to=ALICE_MAIL)
    assert await book.unlink(ALICE_MAIL) and await book.unlink(ALICE_SLACK)
    assert await store.redis.keys(f"{store.keys.prefix}:id:*") == []


async def test_unreachable_redis_is_a_clear_error() -> None:
    store = Store.open("redis://127.0.0.1:1/0", "nowhere")
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1.*SWITCHBOARD_REDIS_URL"):
        await store.address_book.resolve(ALICE_MAIL)
    await store.close()
