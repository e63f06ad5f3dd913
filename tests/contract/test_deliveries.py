"""Delivery records against both stores (memory and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import InvalidTransition, NotFound
from bot.model import (
    Address,
    Answering,
    ChatRef,
    Delivery,
    DeliveryState,
    Network,
    ReplyContext,
)
from tests.contract.conftest import AnyStore

BOB = Address.slack("T0TEAM1", "U0BOB")
ALICE = Address.matrix("@alice:switchboard.test")
CONTEXT = ReplyContext(answering=Answering.EMAIL, entry="e1",
                       email=Address.email("alice@example.com"), person="alice@example.com",
                       replier_name="Bob «B» Ünicode", subject="Numbers",
                       where=ChatRef(Network.SLACK, "C1", "1.5", "1.5"))


def delivery(i: int = 1) -> Delivery:
    return Delivery(id=f"d{i}", conversation_id="c1", sender=BOB, recipient=ALICE,
                    text="See you at 3", state=DeliveryState.PENDING,
                    created_at=1_700_000_000.0 + i, context=CONTEXT)


async def test_every_state_change_is_kept(store: AnyStore) -> None:
    deliveries = store.deliveries
    created = await deliveries.create(delivery())
    assert created.state is DeliveryState.PENDING
    await deliveries.transition("d1", DeliveryState.QUEUED, "alice is away", count_attempt=True)
    await deliveries.transition("d1", DeliveryState.QUEUED, "still away", count_attempt=True)
    done = await deliveries.transition("d1", DeliveryState.DELIVERED, "alice came back")
    assert done.state is DeliveryState.DELIVERED
    assert done.attempts == 2
    assert [(c.state, c.note) for c in done.changes] == [
        (DeliveryState.PENDING, "created"), (DeliveryState.QUEUED, "alice is away"),
        (DeliveryState.QUEUED, "still away"), (DeliveryState.DELIVERED, "alice came back")]
    assert done.context == CONTEXT


async def test_final_states_do_not_move(store: AnyStore) -> None:
    await store.deliveries.create(delivery())
    await store.deliveries.transition("d1", DeliveryState.CANCELLED, "bob cancelled")
    with pytest.raises(InvalidTransition, match="is cancelled; it cannot become delivered"):
        await store.deliveries.transition("d1", DeliveryState.DELIVERED)
    stored = await store.deliveries.get("d1")
    assert stored is not None and stored.state is DeliveryState.CANCELLED
    assert len(stored.changes) == 2


async def test_two_workers_cannot_both_deliver(store: AnyStore) -> None:
    await store.deliveries.create(delivery())
    await store.deliveries.transition("d1", DeliveryState.QUEUED)
    results = await asyncio.gather(
        *(store.deliveries.transition("d1", DeliveryState.DELIVERED) for _ in range(10)),
        return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    stored = await store.deliveries.get("d1")
    assert stored is not None
    assert [c.state for c in stored.changes].count(DeliveryState.DELIVERED) == 1


async def test_create_is_idempotent(store: AnyStore) -> None:
    first = await store.deliveries.create(delivery())
    await store.deliveries.transition("d1", DeliveryState.QUEUED)
    again = await store.deliveries.create(delivery())
    assert again.state is DeliveryState.QUEUED
    assert again.created_at == first.created_at


async def test_listing_by_state_and_sender(store: AnyStore) -> None:
    for i in range(1, 5):
        await store.deliveries.create(delivery(i))
    await store.deliveries.transition("d2", DeliveryState.QUEUED)
    await store.deliveries.transition("d3", DeliveryState.FAILED, "homeserver down")
    queued = await store.deliveries.in_state(DeliveryState.QUEUED)
    assert [d.id for d in queued] == ["d2"]
    pending = await store.deliveries.in_state(DeliveryState.PENDING)
    assert [d.id for d in pending] == ["d1", "d4"]
    mine = await store.deliveries.from_sender(BOB)
    assert [d.id for d in mine] == ["d4", "d3", "d2", "d1"]


async def test_unknown_delivery(store: AnyStore) -> None:
    assert await store.deliveries.get("nope") is None
    with pytest.raises(NotFound):
        await store.deliveries.transition("nope", DeliveryState.DELIVERED)


async def test_a_transition_can_change_how_it_travels(store: AnyStore) -> None:
    from dataclasses import replace

    from bot.model import Carrier

    await store.deliveries.create(delivery())
    emailed = replace(CONTEXT, carrier=Carrier.EMAIL)
    queued = await store.deliveries.transition("d1", DeliveryState.QUEUED, "mail server down",
                                               context=emailed)
    assert queued.context == emailed
    again = await store.deliveries.transition("d1", DeliveryState.QUEUED, "still down")
    assert again.context == emailed  # kept when not given
