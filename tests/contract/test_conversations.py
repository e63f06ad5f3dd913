"""Conversations, posts and reply tokens against both stores (memory and Redis)."""

from __future__ import annotations

import asyncio
import time

from bot.model import Address, ChatRef, EntryKind, HistoryEntry, Network, Provenance
from bot.stores import Arrival
from tests.contract.conftest import AnyStore

ROOT = ChatRef(Network.SLACK, "C1", "100.1", "100.1")
LATER = ChatRef(Network.SLACK, "C1", "100.2", "100.1")


async def test_a_post_is_begun_then_recorded_once(store: AnyStore) -> None:
    conv = store.conversations
    assert await conv.begin_post("<m1@x>", "slack:C1") == (None, False)
    # Cut off before it was recorded: the next attempt learns that it may have posted.
    assert await conv.begin_post("<m1@x>", "slack:C1") == (None, True)
    await conv.record_post("<m1@x>", "slack:C1", ROOT, "c1", "<m1@x>", "e1")
    assert await conv.begin_post("<m1@x>", "slack:C1") == (ROOT, False)
    assert await conv.posted("<m1@x>", "slack:C1") == ROOT
    assert await conv.posted("<m1@x>", "matrix:!r") is None


async def test_the_first_post_of_a_place_is_the_conversations_thread(store: AnyStore) -> None:
    conv = store.conversations
    await conv.record_post("<m1@x>", "slack:C1", ROOT, "c1", "<m1@x>", "e1")
    await conv.record_post("<m2@x>", "slack:C1", LATER, "c1", "<m2@x>", "e2")
    assert await conv.threads("c1") == {"slack:C1": ROOT}
    assert await conv.threads("c2") == {}
    assert await conv.conversations_of(["<m2@x>", "<unknown@x>", "<m1@x>"]) == \
        ["c1", None, "c1"]
    assert await conv.conversations_of([]) == []


async def test_chat_messages_map_back_to_what_they_show(store: AnyStore) -> None:
    conv = store.conversations
    await conv.record_post("<m1@x>", "slack:C1", ROOT, "c1", "<m1@x>", "e1")
    await conv.record_post("<m2@x>", "slack:C1", LATER, "c1", "<m2@x>", "e2")
    assert await conv.shown_in(Network.SLACK, "C1", "100.1") == ("c1", "e1")
    assert await conv.shown_in(Network.SLACK, "C1", "999.9") is None
    assert await conv.latest_in(Network.SLACK, "C1") == ("c1", "e2")
    assert await conv.latest_in(Network.MATRIX, "C1") is None


async def test_a_message_id_keeps_its_first_conversation(store: AnyStore) -> None:
    conv = store.conversations
    await conv.remember_message("<m1@x>", "c1")
    await conv.remember_message("<m1@x>", "c2")
    assert await conv.conversations_of(["<m1@x>"]) == ["c1"]


async def test_reply_tokens_resolve_to_their_conversation_and_recipient(store: AnyStore) -> None:
    alice = Address.email("alice@example.com")
    token = await store.tokens.issue("c1", alice, ttl=60)
    assert token.isalnum() and token == token.lower() and len(token) >= 20
    assert await store.tokens.resolve(token) == ("c1", alice)
    assert await store.tokens.resolve(token.upper()) == ("c1", alice)  # case folded in transit
    assert await store.tokens.resolve("nosuchtoken") is None
    assert await store.tokens.resolve("../../etc") is None


async def test_reply_tokens_expire(store: AnyStore) -> None:
    token = await store.tokens.issue("c1", Address.email("alice@example.com"), ttl=1)
    await asyncio.sleep(1.2)
    assert await store.tokens.resolve(token) is None


async def _arrive(store: AnyStore, message_id: str, *answers: str,
                  conversation: str | None = None, sender: Address | None = None,
                  people: tuple[Address, ...] = (), rates: tuple[int, int] = (100, 3600)
                  ) -> Arrival:
    return await store.arrivals.arrive(
        message_id=message_id, answers=answers, conversation=conversation,
        new_conversation=f"new-{message_id}", sender=sender, people=people,
        sender_rate=rates, conversation_rate=rates)


def _email_entry(cid: str, eid: str, message_id: str, sender: Address) -> HistoryEntry:
    return HistoryEntry(eid, cid, EntryKind.EMAIL, sender, (), 1_700_000_000.0, "hi",
                        meta={"message_id": message_id})


async def test_an_arriving_email_finds_its_conversation_in_one_step(store: AnyStore) -> None:
    alice = Address.email(f"alice-{time.monotonic_ns()}@example.com")
    first = await _arrive(store, "<a1@x>", sender=alice)
    assert (first.conversation_id, first.existing, first.threads) == ("new-<a1@x>", False, {})
    assert await store.arrivals.settle(message_key="<a1@x>", target_key="slack:C1", ref=ROOT,
                                       entry=_email_entry("c-a", "e1", "<a1@x>", alice)) \
        is True
    assert await store.arrivals.settle(message_key="<a1@x>", target_key="slack:C1", ref=ROOT,
                                       entry=_email_entry("c-a", "e1", "<a1@x>", alice)) \
        is False  # settled twice, recorded once
    answer = await _arrive(store, "<a2@x>", "<unknown@x>", "<a1@x>", sender=alice)
    assert (answer.conversation_id, answer.existing) == ("c-a", True)
    assert answer.threads == {"slack:C1": ROOT}
    again = await _arrive(store, "<a1@x>", sender=alice)  # read again: its own conversation
    assert (again.conversation_id, again.existing) == ("c-a", False)
    named = await _arrive(store, "<a3@x>", conversation="c-z", sender=alice)
    assert (named.conversation_id, named.existing) == ("c-z", True)
    assert await store.conversations.shown_in(Network.SLACK, "C1", "100.1") == ("c-a", "e1")
    assert [e.id for e in (await store.history.conversation("c-a")).entries] == ["e1"]


async def test_an_arrival_counts_rates_once_per_email(store: AnyStore) -> None:
    alice = Address.email(f"alice-{time.monotonic_ns()}@example.com")
    # The same email read again is not counted again: r0 twice is one of the two.
    seen = [await _arrive(store, f"<r{i}@x>", sender=alice, rates=(2, 3600))
            for i in (0, 0, 1, 2)]
    assert [a.within_sender_rate for a in seen] == [True, True, True, False]
    bob = Address.email(f"bob-{time.monotonic_ns()}@example.com")
    thread = [await _arrive(store, f"<t{i}@x>", conversation="c-busy", sender=bob,
                            rates=(2, 3600)) for i in range(3)]
    assert [a.within_conversation_rate for a in thread[:2]] == [True, True]
    assert not thread[2].within_sender_rate


async def test_an_arrival_brings_the_identities_it_needs(store: AnyStore) -> None:
    alice = Address.email("alice@example.com")
    alice_chat = Address.slack("T0TEAM1", "U0ALICE")
    carol = Address.email("carol@example.com")
    await store.address_book.link(alice, provenance=Provenance.IMPORTED, verified=True)
    await store.address_book.link(alice_chat, provenance=Provenance.LEARNED, verified=True,
                                  to=alice)
    arrival = await _arrive(store, "<i1@x>", sender=alice,
                            people=(carol, Address.email("nobody@example.com")))
    assert set(arrival.identities) == {alice}
    assert arrival.identities[alice] == await store.address_book.resolve(alice)
    await store.address_book.link(carol, provenance=Provenance.IMPORTED, verified=True)
    arrival = await _arrive(store, "<i2@x>", sender=None, people=(carol,))
    assert arrival.identities[carol].addresses() == [carol]


async def test_a_new_conversations_posts_are_begun_on_arrival(store: AnyStore) -> None:
    async def arrive(message_id: str, *answers: str) -> Arrival:
        return await store.arrivals.arrive(
            message_id=message_id, answers=answers, conversation=None,
            new_conversation=f"new-{message_id}", sender=None, people=(),
            sender_rate=(100, 3600), conversation_rate=(100, 3600), new_places=["slack:C1"])

    alice = Address.email("alice@example.com")
    assert (await arrive("<b1@x>")).begun == {"slack:C1": (None, False)}
    # Arrived again before its post was recorded: an earlier attempt may have posted.
    assert (await arrive("<b1@x>")).begun == {"slack:C1": (None, True)}
    await store.arrivals.settle(message_key="<b1@x>", target_key="slack:C1", ref=ROOT,
                                entry=_email_entry("c-b", "e1", "<b1@x>", alice))
    assert (await arrive("<b1@x>")).begun == {"slack:C1": (ROOT, False)}
    assert (await arrive("<b2@x>", "<b1@x>")).begun == {}  # an answer: its threads decide
