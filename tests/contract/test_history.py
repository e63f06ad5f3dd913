"""Conversation history against both stores (memory and Redis)."""

from __future__ import annotations

import asyncio

from bot.model import Address, AttachmentRef, EntryKind, HistoryEntry
from tests.contract.conftest import AnyStore

ALICE = Address.email("alice@example.com")
BOB = Address.slack("T0TEAM1", "U0BOB")
CAROL = Address.matrix("@carol:switchboard.test")


def entry(i: int, conversation: str, sender: Address, *to: Address, at: float | None = None,
          kind: EntryKind = EntryKind.EMAIL) -> HistoryEntry:
    return HistoryEntry(id=f"e{i}", conversation_id=conversation, kind=kind, sender=sender,
                        recipients=to, at=1_700_000_000.0 + (i if at is None else at),
                        text=f"message {i}", subject="Quarterly numbers")


async def test_entries_are_recorded_once_and_read_newest_first(store: AnyStore) -> None:
    history = store.history
    for i in range(5):
        assert await history.append(entry(i, "c1", ALICE, BOB))
    assert not await history.append(entry(3, "c1", ALICE, BOB))  # a re-read is harmless
    assert await history.count("c1") == 5
    page = await history.conversation("c1", page=0, page_size=3)
    assert [e.id for e in page.entries] == ["e4", "e3", "e2"]
    assert page.has_more
    rest = await history.conversation("c1", page=1, page_size=3)
    assert [e.id for e in rest.entries] == ["e1", "e0"]
    assert not rest.has_more


async def test_order_follows_time_not_arrival(store: AnyStore) -> None:
    await store.history.append(entry(1, "c1", ALICE, BOB, at=50))
    await store.history.append(entry(2, "c1", BOB, ALICE, at=10))
    await store.history.append(entry(3, "c1", ALICE, BOB, at=30))
    page = await store.history.conversation("c1")
    assert [e.id for e in page.entries] == ["e1", "e3", "e2"]


async def test_every_participant_sees_the_exchange(store: AnyStore) -> None:
    history = store.history
    await history.append(entry(1, "c1", ALICE, BOB, CAROL))
    await history.append(entry(2, "c2", BOB, CAROL, kind=EntryKind.CHAT))
    await history.append(entry(3, "c3", CAROL, ALICE))
    alice = await history.person([ALICE])
    assert [(e.conversation_id, e.id) for e in alice.entries] == [("c3", "e3"), ("c1", "e1")]
    carol = await history.person([CAROL])
    assert [e.id for e in carol.entries] == ["e3", "e2", "e1"]
    bob = await history.person([BOB])
    assert [e.kind for e in bob.entries] == [EntryKind.CHAT, EntryKind.EMAIL]


async def test_a_persons_history_spans_all_their_addresses_and_pages(store: AnyStore) -> None:
    history = store.history
    alice_chat = Address.matrix("@alice:switchboard.test")
    for i in range(0, 10, 2):
        await history.append(entry(i, f"mail{i}", ALICE, BOB))
        await history.append(entry(i + 1, f"chat{i}", alice_chat, CAROL, kind=EntryKind.CHAT))
    pages = [await history.person([ALICE, alice_chat], page=p, page_size=4) for p in range(3)]
    ids = [e.id for p in pages for e in p.entries]
    assert ids == [f"e{i}" for i in range(9, -1, -1)]
    assert [p.has_more for p in pages] == [True, True, False]


async def test_entry_round_trips_with_attachments_and_unicode(store: AnyStore) -> None:
    original = HistoryEntry(
        id="m1", conversation_id="c1", kind=EntryKind.EMAIL, sender=ALICE, recipients=(BOB,),
        at=1_700_000_123.5, text="Grüße — 你好", subject="Ünïcode",
        attachments=(AttachmentRef("report.pdf", "application/pdf", 12345, "mxc://x/y"),),
        meta={"message_id": "<m1@example.com>"})
    await store.history.append(original)
    (stored,) = (await store.history.conversation("c1")).entries
    assert stored == original


async def test_concurrent_appends_of_one_entry_record_it_once(store: AnyStore) -> None:
    results = await asyncio.gather(*(store.history.append(entry(1, "c1", ALICE, BOB))
                                     for _ in range(20)))
    assert results.count(True) == 1
    assert await store.history.count("c1") == 1
    assert len((await store.history.person([BOB])).entries) == 1
