"""Routes from chat and held mail in Redis: what two processes see of each other's
changes, and decisions made once however many are made at the same moment."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.held import Decision, HeldMail
from bot.model import Address, Network
from bot.routes import Origin, Route, RouteBook, RouteError, SenderRule
from bot.stores import Beat
from storage.store import Store

pytestmark = pytest.mark.integration

ADMIN = Address.slack("T0TEAM1", "U0ADMIN")
BASE = Route("support@example.org", "slack", "C0SUPPORT")


def book(store: Store) -> RouteBook:
    return RouteBook([BASE], store.routes, ("example.org",))


async def test_a_route_added_in_one_process_is_seen_in_another(store: Store) -> None:
    first, second = book(store), book(store)
    await first.refresh(force=True)
    await second.refresh(force=True)
    added = await first.add("Billing@Example.org", Network.SLACK, "C0BILLING", ADMIN,
                            {"senders": SenderRule.VERIFIED, "name": "Billing"})
    assert added.address == "billing@example.org" and added.origin is Origin.CHAT
    assert second.get("billing@example.org") is None  # until it looks again
    assert await second.refresh()
    seen = second.get("billing@example.org")
    assert seen is not None and seen.senders is SenderRule.VERIFIED and seen.name == "Billing"
    assert not await second.refresh()  # nothing changed since: no reading again

    # Taken, from another room; not ours; the settings' base: each refused with why.
    with pytest.raises(RouteError, match="another channel or room"):
        await second.add("billing@example.org", Network.SLACK, "C0ELSE", ADMIN, {})
    with pytest.raises(RouteError, match="not at a domain"):
        await second.add("x@example.com", Network.SLACK, "C0ELSE", ADMIN, {})
    with pytest.raises(RouteError, match="settings"):
        await second.remove("support@example.org", Network.SLACK, "C0SUPPORT")
    with pytest.raises(RouteError, match="another channel or room"):
        await second.remove("billing@example.org", Network.SLACK, "C0ELSE")

    # An allowed sender travels with the route; changing the route's rules resets them.
    await second.allow("billing@example.org", Address.email("eve@partner.test"))
    await first.refresh()
    route = first.get("billing@example.org")
    assert route is not None and route.allowed == ("eve@partner.test",)
    await first.change("billing@example.org", Network.SLACK, "C0BILLING", ADMIN,
                       {"senders": SenderRule.ANY})
    await second.refresh()
    route = second.get("billing@example.org")
    assert route is not None and route.senders is SenderRule.ANY and route.allowed == ()

    await second.remove("billing@example.org", Network.SLACK, "C0BILLING")
    await first.refresh()
    assert first.get("billing@example.org") is None
    assert [r.address for r in first.all()] == ["support@example.org"]


async def test_two_admins_adding_the_same_address_at_once_one_wins(store: Store) -> None:
    books = [book(store) for _ in range(5)]
    tries = [b.add("sales@example.org", Network.SLACK, f"C0ROOM{i}", ADMIN, {})
             for i, b in enumerate(books)]
    results = await asyncio.gather(*tries, return_exceptions=True)
    assert sum(isinstance(r, Route) for r in results) == 1
    assert sum(isinstance(r, RouteError) for r in results) == 4


def held(held_id: str, room: str = "C0BILLING") -> HeldMail:
    return HeldMail(id=held_id, at=time.time(), kind="unverified", reason="not authenticated",
                    route="billing@example.org", network="slack", room=room,
                    sender="eve@partner.test", subject="Wire", preview="now",
                    message_id=f"<{held_id}@partner.test>", source="smtp",
                    auth_trust="unverified", auth_summary="SPF fail")


async def test_a_held_email_is_decided_once(store: Store) -> None:
    raw = "From: eve@partner.test\r\nSubject: Wire\r\n\r\ncaf\u00e9 \xff\r\n".encode("latin-1")
    assert await store.held.hold(held("h1"), raw)
    assert not await store.held.hold(held("h1"), b"again")  # a re-read: held once
    assert await store.held.raw("h1") == raw
    assert [h.id for h in await store.held.waiting(Network.SLACK, "C0BILLING")] == ["h1"]

    decisions = await asyncio.gather(*(
        store.held.decide("h1", Decision.POSTED, f"admin{i}", 1000.0 + i) for i in range(10)))
    assert sum(fresh for _, fresh in filter(None, decisions)) == 1  # decided once
    assert len({(d.decided_by, d.decided_at) for d, _ in filter(None, decisions)}) == 1
    assert await store.held.waiting() == []
    # Its effect failed: taken back, it waits again, and can be decided anew.
    await store.held.undo("h1")
    assert [h.id for h in await store.held.waiting()] == ["h1"]
    again = await store.held.decide("h1", Decision.DISCARDED, "admin", 2000.0)
    assert again is not None and again[0].decision == "discarded" and again[1]
    assert await store.held.decide("nope", Decision.POSTED, "admin", 1.0) is None


async def test_only_live_processes_report_health(store: Store) -> None:
    await store.beats.beat("host:1", Beat(time.time(), {"redis": True, "mailbox INBOX": True},
                                          {"matrix": 12.5}), 30)
    await store.beats.beat("host:2", Beat(time.time(), {"redis": True}), -1)  # run out
    beats = await store.beats.beats()
    assert list(beats) == ["host:1"] and beats["host:1"].checks["mailbox INBOX"] is True
    assert beats["host:1"].waits == {"matrix": 12.5}
