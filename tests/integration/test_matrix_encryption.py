"""End-to-end encrypted Matrix rooms, with a second encrypting client (matrix-nio, its own
keys) as the person: mail arrives encrypted (attachments too), commands and thread
replies sent encrypted are acted on, a reply in chat lands in an encrypted DM, the bot
keeps its device across a restart, and an event it cannot read is answered once."""

from __future__ import annotations

import asyncio
import email
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from email import policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.runtime.app import Runtime
from bridges.errors import MatrixError
from bridges.matrix.client import key_store_file
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, running_bridge
from tests.conftest import Services
from tests.e2ee import E2eeUser
from tests.integration.test_reply_in_chat import email_card, reply_from_slack, slack_dm
from tests.mailhelp import clear_mailbox, eventually, mailbox, make_mail, send_mail
from tests.servers import free_port, run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

CSV = b"quarter,revenue\nQ3,1200000\n"


async def joined(services: Services, http: aiohttp.ClientSession, token: str, room: str,
                 user: str) -> bool:
    url = f"{services.env['SWITCHBOARD_MATRIX_HOMESERVER']}/_matrix/client/v3/rooms/{room}/" \
          "joined_members"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status == 200 and user in (await r.json()).get("joined", {})


@pytest.fixture
async def dave(services: Services, tmp_path: Path) -> AsyncIterator[E2eeUser]:
    user = await E2eeUser(services, "dave", tmp_path / "dave-keys").start()
    yield user
    await user.stop()


@pytest.fixture
async def encrypted(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                    dave: E2eeUser) -> AsyncIterator[tuple[Bridge, str]]:
    """A bridge routing sales@ to an encrypted room dave made and invited the bot to."""
    bot = services.env["SWITCHBOARD_MATRIX_USER"]
    room = await dave.encrypted_room([bot], f"encrypted sales {uuid.uuid4().hex[:6]}")
    for user in ("alice", "dave"):
        await clear_mailbox(services, user)
    routes = (f"{services.email('support')}=slack:{SLACK_CHANNEL},"
              f"{services.email('sales')}=matrix:{room};replies=email")
    async with running_bridge(services, slack, http, SWITCHBOARD_ROUTES=routes,
                              SWITCHBOARD_MATRIX_ENCRYPTED_DMS="true") as bridge:
        await eventually(lambda: joined(services, http, dave.client.access_token, room, bot),
                         what="the bot in the encrypted room")
        yield bridge, room
        await dave.client.room_leave(room)


def card_in(dave: E2eeUser, room: str, subject: str) -> Any:
    async def find() -> Any:
        return next((e for e in dave.messages(room)
                     if subject in getattr(e, "body", "") and not e.source.get(
                         "content", {}).get("m.relates_to")), None)
    return find


async def test_mail_arrives_encrypted_with_its_attachment(
        encrypted: tuple[Bridge, str], dave: E2eeUser, http: aiohttp.ClientSession) -> None:
    bridge, room = encrypted
    services = bridge.services
    mail = make_mail(services.email("alice"), services.email("sales"), "Encrypted numbers",
                     "The Q3 numbers, attached.")
    mail.add_attachment(CSV, maintype="text", subtype="csv", filename="q3.csv")
    await send_mail(services, mail)
    card = await eventually(card_in(dave, room, "Encrypted numbers"),
                            what="the card, decrypted by dave")
    assert "The Q3 numbers, attached." in card.body
    # As the homeserver holds it, the card is ciphertext.
    url = f"{services.env['SWITCHBOARD_MATRIX_HOMESERVER']}/_matrix/client/v3/rooms/{room}/" \
          "messages?dir=b&limit=20"
    async with http.get(url, headers={"Authorization":
                                      f"Bearer {dave.client.access_token}"}) as r:
        raw = (await r.json())["chunk"]
    ours = [e for e in raw if e["sender"] == services.env["SWITCHBOARD_MATRIX_USER"]
            and "state_key" not in e]  # its posts, not its joining
    assert ours and all(e["type"] == "m.room.encrypted" for e in ours)
    assert "Encrypted numbers" not in str(ours)

    async def the_file() -> Any:
        return next((e for e in dave.messages(room)
                     if e.source.get("content", {}).get("msgtype") == "m.file"), None)

    file_event = await eventually(the_file, what="the attachment, decrypted by dave")
    content = file_event.source["content"]
    assert "url" not in content and content["file"]["v"] == "v2"
    assert content["m.relates_to"]["event_id"] == card.event_id  # in the card's thread
    assert await dave.download_decrypted(content["file"]) == CSV


async def test_commands_and_thread_replies_sent_encrypted_are_acted_on(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    bridge, room = encrypted
    services = bridge.services
    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "Encrypted question", "Can you ship on Friday?"))
    card = await eventually(card_in(dave, room, "Encrypted question"), what="the card")
    thread = {"rel_type": "m.thread", "event_id": card.event_id, "is_falling_back": True,
              "m.in_reply_to": {"event_id": card.event_id}}
    await dave.send(room, {"msgtype": "m.text", "body": "!sb im Friday it is, Alice.",
                           "m.relates_to": thread})
    # Alice is on Slack: the reply reaches her DM there, and dave is told, encrypted.
    (dm,) = await eventually(lambda: slack_dm(bridge, SLACK_PEOPLE["alice"]),
                             what="the !sb im reply in alice's Slack DM")
    assert "Friday it is, Alice." in str(dm["blocks"])

    async def told() -> Any:
        return next((e for e in dave.messages(room)
                     if e.source.get("content", {}).get("msgtype") == "m.notice"
                     and "reached alice" in getattr(e, "body", "")), None)

    await eventually(told, what="the notice that it reached alice, decrypted")
    await dave.send(room, {"msgtype": "m.text", "body": "Yes, Friday works.",
                           "m.relates_to": thread})

    async def answered() -> bool:
        for raw in await mailbox(services, "alice"):
            msg = email.message_from_bytes(raw, policy=policy.default)
            if "Encrypted question" in str(msg["Subject"]):
                return "Yes, Friday works." in str(msg.get_body(("plain",)).get_content())
        return False

    await eventually(answered, what="the plain thread reply, by email to alice")


async def test_a_reply_in_chat_lands_in_an_encrypted_dm(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    bridge, _ = encrypted
    dave_email = bridge.services.email("dave")
    card = await email_card(bridge, f"Dave <{dave_email}>", "Encrypted DM please")
    await reply_from_slack(bridge, card, "Dave, this reaches you encrypted.")

    async def dm() -> Any:
        for room_id, event in dave.decrypted:
            if "this reaches you encrypted" in getattr(event, "body", ""):
                return room_id, event
        return None

    room_id, event = await eventually(dm, what="bob's reply in dave's encrypted DM")
    assert dave.client.rooms[room_id].encrypted
    assert "Can you check the numbers?" in event.body  # the history travels with it


async def test_the_bot_keeps_its_device_across_a_restart(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    bridge, room = encrypted
    services = bridge.services
    assert bridge.runtime.matrix is not None
    device = bridge.runtime.matrix.client.device_id
    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "Before the restart", "One"))
    await eventually(card_in(dave, room, "Before the restart"), what="the first card")
    await bridge.restart()
    assert bridge.runtime.matrix is not None and bridge.runtime.matrix.encrypting
    assert bridge.runtime.matrix.client.device_id == device  # the same device, same keys
    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "After the restart", "Two"))
    await eventually(card_in(dave, room, "After the restart"),
                     what="the second card, decrypted")


async def test_an_unreadable_event_is_answered_once(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    bridge, room = encrypted
    bot = bridge.services.env["SWITCHBOARD_MATRIX_USER"]
    await unreadable_to_the_bot(dave, bot, room, "!sb help")
    await unreadable_to_the_bot(dave, bot, room, "!sb help again")

    async def told() -> list[Any]:
        return [e for e in dave.messages(room)
                if "could not read your encrypted message" in getattr(e, "body", "")]

    await eventually(told, what="the notice that the bot could not read it")
    await asyncio.sleep(2)
    assert len(await told()) == 1  # once, not per message


async def test_an_unreadable_command_is_acted_on_when_the_senders_device_sends_the_key(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    """The bot asks the sender's device (not its own) for the missing key; the answer,
    a forwarded key from the device that made the session, unlocks the message and the
    command in it is carried out."""
    bridge, room = encrypted
    bot = bridge.services.env["SWITCHBOARD_MATRIX_USER"]
    await unreadable_to_the_bot(dave, bot, room, "!sb help")

    async def asked() -> list[Any]:
        return [r for r in dave.key_requests if r.room_id == room]

    (request,) = await eventually(asked, what="the bot's key request at dave's device")
    assert request.sender == bot and request.algorithm == "m.megolm.v1.aes-sha2"
    assert await dave.forward_requested_keys() == 1

    async def helped() -> list[Any]:
        return [e for e in dave.messages(room) if e.sender == bot
                and "Switchboard commands:" in getattr(e, "body", "")]

    await eventually(helped, within=30, what="the help the late-read command asked for")


async def unreadable_to_the_bot(dave: E2eeUser, bot: str, room: str, text: str) -> None:
    """``text`` sent by dave with his client refusing to share its room keys with the
    bot's device: the bot gets ciphertext it cannot read."""
    await eventually(lambda: _known_devices(dave, bot), what="the bot's device at dave's")
    for device in dave.client.device_store.active_user_devices(bot):
        dave.client.blacklist_device(device)
    await dave.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text},
                                ignore_unverified_devices=True)


async def _known_devices(dave: E2eeUser, user: str) -> bool:
    if not list(dave.client.device_store.active_user_devices(user)):
        dave.client.olm.users_for_key_query.add(user)
        await dave.client.keys_query()
    return bool(list(dave.client.device_store.active_user_devices(user)))


async def test_a_worker_hands_encrypted_posts_to_the_key_holder(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    """A process without the bot's keys posts into an encrypted room through the one that
    holds them; the same post handed over twice appears once. A second `switchboard run`
    does not take the keys the first holds (one writer of the key store, ever)."""
    bridge, room = encrypted
    second = await Runtime.start(bridge.settings)
    try:
        assert second.matrix is not None and not second.matrix.encrypting
    finally:
        await second.close()
    worker = await Runtime.start(bridge.settings, holds_matrix_keys=False)
    try:
        assert worker.matrix is not None and not worker.matrix.encrypting
        content = {"msgtype": "m.text", "body": "Posted for a worker", "m.mentions": {}}
        first = await worker.matrix.send(room, content, "worker-post-1")
        again = await worker.matrix.send(room, content, "worker-post-1")
        assert first == again
    finally:
        await worker.close()

    async def seen() -> list[Any]:
        return [e for e in dave.messages(room) if getattr(e, "body", "") == content["body"]]

    (event,) = await eventually(seen, what="the worker's post, decrypted by dave")
    assert event.source.get("type") == "m.room.message"  # decrypted from m.room.encrypted
    assert event.decrypted


async def test_lost_keys_stop_the_start_with_what_to_do(
        encrypted: tuple[Bridge, str]) -> None:
    bridge, _ = encrypted
    settings = bridge.settings
    assert settings.matrix is not None and bridge.runtime.matrix is not None
    device = bridge.runtime.matrix.client.device_id
    kept = key_store_file(settings.matrix.key_store, settings.matrix.user, device)
    assert kept.exists()
    env = bridge.services.service_env(**{k: v for k, v in bridge.env.items()
                                         if k.startswith("SWITCHBOARD_")})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    await bridge.halt()  # stopped; then its key file is lost
    aside = kept.with_suffix(".aside")
    kept.rename(aside)
    try:
        with pytest.raises(MatrixError, match=f"keys of the bot's device {device} are missing"):
            await Runtime.start(settings)
        code, out, _ = await run_cli("doctor", env=env)
        assert code == 1 and "FAIL  matrix keys" in out and "new-device" in out
    finally:
        aside.rename(kept)
        await bridge.resume()
    code, out, _ = await run_cli("doctor", env=env)
    assert f"OK    matrix keys device {device}" in out
    # Starting over is the operator's explicit choice: a new device, new keys.
    await bridge.halt()
    code, out, _ = await run_cli("matrix", "new-device", env=env)
    assert code == 0 and "new device" in out
    await bridge.resume()
    fresh = bridge.runtime.matrix
    assert fresh is not None and fresh.encrypting and fresh.client.device_id != device
    assert key_store_file(settings.matrix.key_store, settings.matrix.user,
                          fresh.client.device_id).exists()


async def test_another_run_takes_the_keys_over_when_the_holder_stops(
        encrypted: tuple[Bridge, str], dave: E2eeUser) -> None:
    bridge, room = encrypted
    settings = replace(bridge.settings, imap=None, smtp_listen=None,
                       http_listen=("127.0.0.1", free_port()))
    second = await Runtime.start(settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(second.serve(stop))
    try:
        assert second.matrix is not None and not second.matrix.encrypting
        await bridge.halt()  # the holder stops (as SIGTERM): its keys are free

        async def took_over() -> bool:
            return second.matrix is not None and second.matrix.encrypting

        await eventually(took_over, what="the second process holding the keys")
        await dave.send(room, {"msgtype": "m.text", "body": "!sb help"})

        async def answered() -> Any:
            return next((e for e in dave.messages(room)
                         if "Switchboard commands" in getattr(e, "body", "")), None)

        await eventually(answered, what="the new key holder answering, encrypted")
    finally:
        stop.set()
        await serving
        await second.close()
        await bridge.resume()
