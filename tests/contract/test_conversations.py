"""Conversations, posts and reply tokens against both stores (memory and Redis)."""

from __future__ import annotations

import asyncio

from bot.model import Address, ChatRef, Network
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
