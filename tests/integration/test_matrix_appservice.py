"""Switchboard as the homeserver's application service, on the real Synapse with its
default rate limits: the homeserver loads the registration and reaches Switchboard; an
email's card comes from its sender's own Matrix user, named after them; people's replies
in the thread reach the sender by email as before, and the sender's answer comes back
from their user; a burst of 100 emails posts without one M_LIMIT_EXCEEDED. In bot-account
mode, the same homeserver throttles the bot, and the log, `status` and doctor say so."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.doctor import Status
from bot.runtime.app import Runtime
from bot.settings import Settings
from bridges.matrix.ghosts import ERASED_NAME
from bridges.matrix.probe import probe_matrix
from bridges.matrix.registration import Registration
from tests.bridge import Bridge, bridge_env
from tests.conftest import Services
from tests.integration.test_reply_by_email import _text, answer, received
from tests.integration.test_slack_pacing import burst, conversation_mails
from tests.mailhelp import MatrixUser, clear_mailbox, eventually, make_mail, send_mail
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

RATES = {"SWITCHBOARD_SENDER_RATE": "1000/60", "SWITCHBOARD_CONVERSATION_RATE": "1000/60"}


def registration(services: Services) -> Registration:
    return Registration.load(services.env["SB_APPSERVICE_REGISTRATION"],
                             services.matrix_server)


async def as_service(services: Services, http: aiohttp.ClientSession, method: str,
                     path: str, body: dict[str, Any] | None = None) -> Any:
    """A call as the application service itself (its bot, by the as_token)."""
    base = services.env["SWITCHBOARD_MATRIX_HOMESERVER"]
    headers = {"Authorization": f"Bearer {registration(services).as_token}"}
    async with http.request(method, f"{base}/_matrix/client/v3{path}", json=body or {},
                            headers=headers) as r:
        return await r.json()


@asynccontextmanager
async def bridge_as(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                    bot: str, unset: tuple[str, ...] = (), **extra: str
                    ) -> AsyncIterator[Bridge]:
    """Switchboard with the bot ``bot`` in a new room alice made and invited it to (the
    bot joins on the invitation, as it would in any organisation's room)."""
    await clear_mailbox(services, "switchboard")
    alice = await MatrixUser(services, "alice", http).login()
    created = await alice.call("POST", "/createRoom", {
        "name": f"desk {uuid.uuid4().hex[:6]}", "invite": [bot]})
    room = created["room_id"]
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room, ("SWITCHBOARD_MATRIX_KEY_STORE", *unset),
                     SWITCHBOARD_MATRIX_USER=bot,
                     SWITCHBOARD_ROUTES=f"{services.email('sales')}=matrix:{room};replies=email",
                     **RATES, **extra)
    settings = Settings.load(env)
    runtime = await Runtime.start(settings)
    stop = asyncio.Event()
    bridge = Bridge(runtime, settings, env, room, alice, slack, services, stop,
                    asyncio.create_task(runtime.serve(stop)))

    async def joined() -> bool:
        members = await alice.call("GET", f"/rooms/{room}/joined_members")
        return bot in members["joined"]

    try:
        await eventually(joined, within=30, what=f"{bot} to join on alice's invitation")
        yield bridge
    finally:
        stop.set()
        if bridge.serving is not None:
            await bridge.serving
        found = [k async for k in runtime.store.redis.scan_iter(match=f"{prefix}:*")]
        if found:
            await runtime.store.redis.delete(*found)
        await runtime.close()
        await alice.leave(room)
        await alice.logout()


@pytest.fixture
async def appservice(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                     ) -> AsyncIterator[Bridge]:
    for user in ("dave", "carol"):
        await clear_mailbox(services, user)
    async with bridge_as(services, slack, http, services.env["SB_APPSERVICE_BOT"],
                         ("SWITCHBOARD_MATRIX_PASSWORD",),
                         SWITCHBOARD_MATRIX_REGISTRATION=services.env[
                             "SB_APPSERVICE_REGISTRATION"],
                         SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:"
                                                 f"{services.env['SB_APPSERVICE_PORT']}"
                         ) as bridge:
        yield bridge
        await as_service(services, bridge.alice.http, "POST", f"/rooms/{bridge.room}/leave")


async def cards(bridge: Bridge, containing: str) -> list[dict[str, Any]]:
    return [e for e in await bridge.alice.messages(bridge.room, 500)
            if containing in e["content"].get("body", "")
            and e["content"].get("msgtype") == "m.text"]


async def test_the_homeserver_loads_the_registration_and_reaches_switchboard(
        appservice: Bridge) -> None:
    checks = await probe_matrix(appservice.settings)
    assert all(c.status is Status.OK for c in checks), checks
    said = " ".join(c.detail for c in checks)
    assert "application service 'switchboard'" in said
    assert "reaches Switchboard at http://127.0.0.1:" in said
    assert "exempt from the homeserver's rate limits" in said


async def test_an_email_comes_from_its_senders_own_matrix_user(appservice: Bridge) -> None:
    services, room = appservice.services, appservice.room
    dave = services.email("dave")
    ghost = registration(services).ghost(dave)
    await send_mail(services, make_mail(f"Dave Davies <{dave}>", services.email("sales"),
                                        "Shipping to Oslo", "Can you ship to Oslo?"))
    (card,) = await eventually(lambda: cards(appservice, "Shipping to Oslo"),
                               what="the card in the room")
    assert card["sender"] == ghost
    member = await appservice.alice.call("GET", f"/rooms/{room}/state/m.room.member/{ghost}")
    assert member["displayname"] == "Dave Davies (email)"

    # Alice answers in the thread, as she would any message: Dave gets it by email.
    await appservice.alice.call("PUT", f"/rooms/{room}/send/m.room.message/a{uuid.uuid4().hex}", {
        "msgtype": "m.text", "body": "Yes, Oslo is fine.",
        "m.relates_to": {"rel_type": "m.thread", "event_id": card["event_id"]}})
    sent = await received(services, "dave", "Shipping to Oslo")
    assert "Yes, Oslo is fine." in _text(sent)

    # Dave's answer comes back into the thread, from his user again.
    await send_mail(services, answer(sent, f"Dave Davies <{dave}>", "Great, order placed."))
    (back,) = await eventually(lambda: cards(appservice, "Great, order placed."),
                               what="Dave's answer in the thread")
    assert back["sender"] == ghost
    assert back["content"]["m.relates_to"]["event_id"] == card["event_id"]

    # Dave asks to be forgotten: his user no longer shows his name, in the room or at all.
    env = services.service_env(**appservice.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    code, out, err = await run_cli("forget", dave, env=env)
    assert code == 0, err
    assert "1 email sender user(s) renamed" in out

    async def renamed() -> bool:
        member = await appservice.alice.call("GET",
                                             f"/rooms/{room}/state/m.room.member/{ghost}")
        return bool(member["displayname"] == ERASED_NAME)

    await eventually(renamed, what="Dave's user renamed in the room")
    profile = await appservice.alice.call("GET", f"/profile/{ghost}")
    assert profile["displayname"] == ERASED_NAME and "Dave" not in str(profile)


async def test_a_hostile_name_is_shown_as_a_person_would_read_it(appservice: Bridge) -> None:
    services, room = appservice.services, appservice.room
    carol = services.email("carol")
    # A right-to-left override and zero-width characters hide what a name says.
    sender = f'"Carol\u202e\u200b Admin\u2066 [bot]" <{carol}>'
    await send_mail(services, make_mail(sender, services.email("sales"), "Odd name", "hi"))
    (card,) = await eventually(lambda: cards(appservice, "Odd name"), what="the card")
    member = await appservice.alice.call(
        "GET", f"/rooms/{room}/state/m.room.member/{card['sender']}")
    assert member["displayname"] == "Carol Admin [bot] (email)"


async def test_a_hundred_emails_post_without_a_rate_limit(appservice: Bridge) -> None:
    services = appservice.services
    tag = f"as-{uuid.uuid4().hex[:6]}"
    senders = [services.email(name) for name in ("alice", "bob", "carol", "dave")]
    mails = []
    for i, sender in enumerate(senders):
        mails += conversation_mails(f"Person {i} <{sender}>", [services.email("sales")],
                                    26 if i < 2 else 24, f"{tag}-{i}")
    assert len(mails) == 100
    answers = await asyncio.to_thread(burst, appservice.listener_port, mails[0::2])
    answers += await asyncio.to_thread(burst, appservice.listener_port, mails[1::2])
    assert Counter(answers) == Counter({"250": 100})

    async def all_posted() -> list[dict[str, Any]] | None:
        found = await cards(appservice, tag)
        return found if len(found) >= 100 else None

    found = await eventually(all_posted, within=180, what="all 100 emails in the room")
    await asyncio.sleep(1.0)
    found = await cards(appservice, tag)
    subjects = Counter(e["content"]["body"].split("\n")[0] for e in found)
    assert len(found) == 100, subjects
    ghosts = {registration(services).ghost(s) for s in senders}
    assert {e["sender"] for e in found} == ghosts
    place = {e["event_id"]: n for n, e in enumerate(found)}
    for i in range(4):
        for j in range(13 if i < 2 else 12):
            subject = f"{tag}-{i} {j:02d} question"
            (question,) = [e for e in found if subject in e["content"]["body"]
                           and f"Re: {subject}" not in e["content"]["body"]]
            (follow,) = [e for e in found if f"Re: {subject}" in e["content"]["body"]]
            assert place[follow["event_id"]] > place[question["event_id"]]
            assert follow["content"]["m.relates_to"]["event_id"] == question["event_id"]
    matrix = appservice.runtime.matrix
    assert matrix is not None and matrix.throttled == 0 and matrix.throttled_seconds == 0


async def test_a_throttled_bot_account_says_so(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """Bot-account mode, the bot under Synapse's default limit (0.2 a second after a burst
    of 10): the burst still arrives whole, and the log, `status` and doctor say why slowly."""
    caplog.set_level(logging.WARNING, logger="bridges.matrix.client")
    async with bridge_as(services, slack, http, services.env["SB_THROTTLED_BOT"]) as bridge:
        tag = f"slow-{uuid.uuid4().hex[:6]}"
        mails = [make_mail(services.email("dave"), services.email("sales"), f"{tag} {i:02d}",
                           "one of many") for i in range(14)]
        answers = await asyncio.to_thread(burst, bridge.listener_port, mails)
        assert Counter(answers) == Counter({"250": 14})

        async def all_posted() -> list[dict[str, Any]] | None:
            found = await cards(bridge, tag)
            return found if len(found) >= 14 else None

        found = await eventually(all_posted, within=150, what="the 14 emails, slowly")
        assert len(found) == 14
        matrix = bridge.runtime.matrix
        assert matrix is not None and matrix.throttled > 0 and matrix.throttled_seconds > 0
        assert "the homeserver is throttling the bot (M_LIMIT_EXCEEDED" in caplog.text

        # `status` in the room tells its admin (alice made the room) how long posts waited.
        await bridge.alice.call("PUT", f"/rooms/{bridge.room}/send/m.room.message/"
                                       f"s{uuid.uuid4().hex}",
                                {"msgtype": "m.text", "body": "!sb status"})

        async def status() -> str | None:
            for e in await bridge.alice.messages(bridge.room, 50):
                body = e["content"].get("body", "")
                if e["content"].get("msgtype") == "m.notice" and "Status of this" in body:
                    return str(body)
            return None

        told = await eventually(status, within=60, what="the answer to `status`")
        assert "Matrix posts waited" in told and "the homeserver throttles the bot" in told

        checks = await probe_matrix(bridge.settings)
        (limit,) = [c for c in checks if "rate limit" in c.detail]
        assert limit.status is Status.WARN
        assert "override_ratelimit" in limit.fix and "application service" in limit.fix


async def test_only_the_homeserver_is_heard_and_each_transaction_once(
        appservice: Bridge) -> None:
    """A transaction the homeserver sends again (it got no answer in time) is acted on
    once; a caller without the hs_token is refused and changes nothing."""
    services, room = appservice.services, appservice.room
    url = f"http://127.0.0.1:{services.env['SB_APPSERVICE_PORT']}/_matrix/app/v1/transactions"
    event = {"type": "m.room.message", "room_id": room, "sender": appservice.alice.user_id,
             "event_id": f"$pushed{uuid.uuid4().hex}", "origin_server_ts": 1,
             "content": {"msgtype": "m.text", "body": "!sb help"}}
    txn = f"t{uuid.uuid4().hex}"
    http = appservice.alice.http
    for headers, status in (({}, 401), ({"Authorization": "Bearer forged"}, 403)):
        async with http.put(f"{url}/{txn}", json={"events": [event]}, headers=headers) as r:
            assert r.status == status
            assert (await r.json())["errcode"] in ("M_UNAUTHORIZED", "M_FORBIDDEN")
    heard = {"Authorization": f"Bearer {registration(services).hs_token}"}
    for _ in range(3):
        async with http.put(f"{url}/{txn}", json={"events": [event]}, headers=heard) as r:
            assert r.status == 200 and await r.json() == {}

    async def answers() -> list[dict[str, Any]]:
        return [e for e in await appservice.alice.messages(appservice.room)
                if e["content"].get("msgtype") == "m.notice"
                and "Switchboard commands" in e["content"].get("body", "")]

    await eventually(answers, what="the answer to the pushed command")
    await asyncio.sleep(1.0)
    assert len(await answers()) == 1
