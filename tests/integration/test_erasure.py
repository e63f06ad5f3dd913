"""`switchboard forget` as a person asks for it: after a conversation that went every
way (email in, a reply in chat, a reply by email, her answer back), a scan of every key
and value under the prefix finds nothing of her but what billing keeps (README)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from storage.store import Store
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import answer, received, reply_by_email_from_slack
from tests.integration.test_reply_in_chat import bob_told, email_card, reply_from_slack
from tests.mailhelp import clear_mailbox, eventually, send_mail
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    for user in ("bob", "carol"):
        await clear_mailbox(services, user)
    async with running_bridge(services, slack, http) as running:
        yield running


async def traces(store: Store, needles: list[str]) -> dict[str, str]:
    """Every key under the prefix whose name or value holds one of ``needles`` (any
    case), with where in it."""
    found: dict[str, str] = {}
    wanted = [n.lower() for n in needles]
    async for key in store.redis.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        kind = await store.redis.type(key)
        if kind == "string":
            value: object = await store.redis.get(key)
        elif kind == "hash":
            value = await store.redis.hgetall(key)
        elif kind == "list":
            value = await store.redis.lrange(key, 0, -1)
        elif kind == "set":
            value = await store.redis.smembers(key)
        elif kind == "zset":
            value = await store.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await store.redis.xrange(key)
        else:
            value = kind
        seen = f"{key} {value}".lower()
        for needle in wanted:
            at = seen.find(needle)
            if at >= 0:
                found[key] = seen[max(0, at - 120):at + 80]
    return found


async def test_forget_leaves_nothing_of_the_person_under_the_prefix(bridge: Bridge) -> None:
    services, store = bridge.services, bridge.runtime.store
    carol = services.email("carol")
    carol_slack = SLACK_PEOPLE["carol"]
    await bridge.slack.add_user(carol_slack, "carol", carol, "active")
    card = await email_card(bridge, f"Carol Jones <{carol}>", "Refund for order 12",
                            "Where is my refund?")
    await reply_from_slack(bridge, card, "Refund sent on Monday.")
    await bob_told(bridge, "reached carol")
    await reply_by_email_from_slack(bridge, card, "And by email, for your records.")
    await bob_told(bridge, f"Sent by email to {carol}")
    emailed = await received(services, "carol", "Refund for order 12")
    await send_mail(services, answer(emailed, carol, "Thank you, it arrived."))

    async def answered() -> bool:
        replies = [m for m in await bridge.slack_posts(SLACK_CHANNEL)
                   if "Thank you, it arrived." in str(m.get("blocks"))]
        return bool(replies)

    await eventually(answered, what="carol's answer in the thread")
    needles = [carol, carol_slack, "Carol Jones"]
    assert await traces(store, needles)  # the scan sees her before

    env = services.service_env(**{k: v for k, v in bridge.env.items()
                                  if k.startswith("SWITCHBOARD_")})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    code, out, err = await run_cli("forget", carol, env=env)
    assert code == 0, err
    assert "erased:" in out
    left = await traces(store, needles)
    assert left == {}, "\n".join(f"{k}: ...{v}..." for k, v in left.items())
