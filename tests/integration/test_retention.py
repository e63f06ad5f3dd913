"""Retention and erasure on the real Redis: what goes, what stays, in bounded batches,
and that an erasure leaves nothing of the person behind (and says that it was done)."""

from __future__ import annotations

import time

import pytest

from bot.audit import AuditAction
from bot.flows.inbound_email import HISTORY_TEXT_LIMIT, kept_text
from bot.model import Address, Delivery, DeliveryState, EntryKind, HistoryEntry, Provenance
from bot.retention import expire_history, forget
from storage.store import Store

pytestmark = pytest.mark.integration

DAY = 86400.0
ALICE = Address.email("alice@example.com")
ALICE_SLACK = Address.slack("T0ONE", "U0ALICE")
BOB = Address.slack("T0ONE", "U0BOB")
CAROL = Address.email("carol@example.com")


def entry(i: int, conversation: str, sender: Address, to: Address, at: float) -> HistoryEntry:
    return HistoryEntry(id=f"e{i}", conversation_id=conversation, kind=EntryKind.EMAIL,
                        sender=sender, recipients=(to,), at=at, text=f"body {i}",
                        subject=f"subject {i}", meta={"message_id": f"<m{i}@example.com>"})


async def test_history_past_its_age_goes_in_batches_and_the_rest_stays(store: Store) -> None:
    now = time.time()
    old = [entry(i, "c-old", CAROL, BOB, now - 40 * DAY + i) for i in range(7)]
    mixed = [entry(10, "c-mixed", CAROL, BOB, now - 35 * DAY),
             entry(11, "c-mixed", BOB, CAROL, now - 2 * DAY)]
    for e in (*old, *mixed):
        await store.history.append(e, arrived=e.at)  # each arrived when it was written
    await store.conversations.remember_message("<m0@example.com>", "c-old")
    removed = await expire_history(store.erasure, 30, now=now, batch=3)
    assert removed == 8  # in batches of three: 3, 3, 2
    assert await store.history.count("c-old") == 0
    assert await store.history.entry("c-old", "e0") is None
    assert [e.id for e in (await store.history.conversation("c-mixed")).entries] == ["e11"]
    assert [e.id for e in (await store.history.person([CAROL])).entries] == ["e11"]
    assert await store.conversations.conversations_of(["<m0@example.com>"]) == [None]
    assert not await store.redis.exists(store.keys.conversation_entries("c-old"))
    assert await expire_history(store.erasure, 30, now=now) == 0  # nothing left to do


async def test_forgetting_a_person_leaves_nothing_of_them(store: Store) -> None:
    now = time.time()
    await store.address_book.link(ALICE, provenance=Provenance.SELF_LINKED, verified=True)
    await store.address_book.link(ALICE_SLACK, provenance=Provenance.SELF_LINKED, verified=True,
                                  to=ALICE)
    await store.history.append(entry(1, "c1", ALICE, BOB, now))
    await store.history.append(entry(2, "c1", BOB, ALICE_SLACK, now + 1))
    await store.history.append(entry(3, "c2", CAROL, BOB, now + 2))  # not hers
    token = await store.tokens.issue("c1", ALICE, 3600)
    await store.deliveries.create(Delivery(
        id="d-alice", conversation_id="c1", sender=BOB, recipient=ALICE_SLACK,
        text="a reply waiting for her", state=DeliveryState.PENDING, created_at=now))
    await store.deliveries.create(Delivery(
        id="d-carol", conversation_id="c2", sender=BOB, recipient=CAROL,
        text="for carol", state=DeliveryState.PENDING, created_at=now))

    done = await forget(ALICE_SLACK, store.address_book, store.erasure, store.audit,
                        by="operator")
    assert (done.addresses, done.erased.entries, done.erased.reply_tokens,
            done.erased.deliveries) == (2, 2, 1, 1)
    assert await store.address_book.resolve(ALICE) is None
    assert await store.address_book.resolve(ALICE_SLACK) is None
    assert (await store.history.person([ALICE, ALICE_SLACK])).entries == ()
    assert await store.history.count("c1") == 0
    assert await store.tokens.resolve(token) is None
    assert await store.deliveries.get("d-alice") is None
    assert await store.deliveries.get("d-carol") is not None  # others' data stays
    assert [e.id for e in (await store.history.conversation("c2")).entries] == ["e3"]
    # Recorded as done, never as what: no address of hers in the trail.
    (event,) = [e for e in await store.audit.recent(10) if e.action is AuditAction.ERASED]
    assert event.actor == "operator" and event.target.startswith("person receipt:")
    assert "alice" not in str(event).lower()
    keys = [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")]
    assert not [k for k in keys if "alice" in k.lower()]  # no timeline, token set, ...
    assert "alice" not in str(await store.redis.hgetall(store.keys.address_index())).lower()


async def test_retention_dates_entries_by_arrival_not_by_the_date_a_sender_wrote(
        store: Store) -> None:
    """An email dated a year ahead (its Date header is the sender's) expires with the
    rest of its day, and one dated 1990 is not removed early."""
    now = time.time()
    future = entry(20, "c-future", CAROL, BOB, now + 365 * DAY)
    ancient = entry(21, "c-ancient", CAROL, BOB, 631152000.0)  # 1990
    for e in (future, ancient):
        await store.history.append(e, arrived=now - 40 * DAY)
    fresh = entry(22, "c-fresh", CAROL, BOB, 631152000.0)
    await store.history.append(fresh)  # arrives now
    assert await expire_history(store.erasure, 30, now=now) == 2
    assert await store.history.count("c-future") == 0
    assert await store.history.count("c-ancient") == 0
    assert await store.history.count("c-fresh") == 1


def test_a_huge_body_is_kept_bounded_with_a_note() -> None:
    body = "x" * (HISTORY_TEXT_LIMIT * 3)
    kept = kept_text(body)
    assert len(kept) < HISTORY_TEXT_LIMIT + 200
    assert "the whole email is in the mailbox" in kept
    assert kept_text("short") == "short"
