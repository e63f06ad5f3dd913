"""Running Switchboard from chat: a room's admins connect addresses to it (Slack
`/switchboard route …`, Matrix `!sb route …`), with two `switchboard run` processes
sharing the routes through Redis; mail a route holds is offered to the room's admins,
who post it (once), discard it or allow its sender; `status` reports the room."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.bridge import SIGNING_SECRET, SLACK_PEOPLE, Bridge, other_run, running_bridge
from tests.conftest import Services
from tests.integration.test_commands import matrix_runner
from tests.integration.test_reply_in_chat import button, slack_dm
from tests.mailhelp import (
    ELSEWHERE,
    MatrixUser,
    clear_mailbox,
    eventually,
    mailbox,
    make_mail,
    send_mail,
)
from tests.slackapi.client import SlackControl, SlackSender

pytestmark = pytest.mark.integration

CHANNEL = "C0ROUTES01"
DANA = "U0DANA0001"  # a workspace admin
BOB = SLACK_PEOPLE["bob"]  # a plain member


@dataclass
class TwoRuns:
    bridge: Bridge  # the first `switchboard run` (in this process)
    other_env: dict[str, str]  # the second's settings (its own process)

    @property
    def other_listener(self) -> int:
        return int(self.other_env["SWITCHBOARD_SMTP_LISTEN"].rpartition(":")[2])

    def slack_to(self, which: str) -> SlackSender:
        """Slack's signed requests to the first or the second process."""
        env = self.bridge.env if which == "first" else self.other_env
        port = env["SWITCHBOARD_HTTP_LISTEN"].rpartition(":")[2]
        return SlackSender(f"http://127.0.0.1:{port}/slack/events", SIGNING_SECRET,
                           self.bridge.slack, self.bridge.team)


@pytest.fixture
async def runs(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
               tmp_path: Path) -> AsyncIterator[TwoRuns]:
    async with running_bridge(services, slack, http) as bridge:
        await slack.add_user(DANA, "dana", services.email("dana"), is_admin=True)
        await slack.add_channel(CHANNEL, "billing", [DANA, BOB])
        async with other_run(bridge.env, tmp_path / "second-run.log", http) as other:
            yield TwoRuns(bridge, other.env)


async def slack_command(runs: TwoRuns, which: str, user: str, text: str,
                        channel: str = CHANNEL) -> str:
    """A slash command typed in ``channel``; the text of its (ephemeral) answer."""
    before = len((await runs.bridge.slack.state())["responses"])
    status, _ = await runs.slack_to(which).slash_command(user, user, channel, text)
    assert status == 200

    async def answer() -> str | None:
        responses = (await runs.bridge.slack.state())["responses"]
        if len(responses) <= before:
            return None
        return "\n".join(b["text"]["text"] for b in responses[-1].get("blocks", [])
                         if b["type"] == "section").replace("&gt;", ">").replace("&lt;", "<")

    return await eventually(answer, what=f"the answer to /switchboard {text}")


async def channel_posts(runs: TwoRuns, words: str) -> list[dict[str, Any]]:
    return [m for m in await runs.bridge.slack.messages(CHANNEL) if words in str(m["blocks"])]


async def held_notice(runs: TwoRuns, user: str, words: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        return next((m for m in await slack_dm(runs.bridge, user)
                     if "Held for the admins" in str(m["blocks"]) and words in str(m["blocks"])),
                    None)
    return await eventually(found, what=f"the held-mail notice in {user}'s DM")


async def pending(runs: TwoRuns) -> str:
    """`switchboard pending`, as the operator runs it."""
    bin_dir = Path(sys.executable).parent
    done = await asyncio.to_thread(
        subprocess.run, [str(bin_dir / "switchboard"), "pending"],
        env={**runs.bridge.env, "PATH": str(bin_dir)}, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def responses_after(runs: TwoRuns, before: int, count: int) -> list[str]:
    """The next ``count`` answers Switchboard gave through response URLs."""
    async def found() -> list[str] | None:
        answers = [str(r.get("blocks")) for r in
                   (await runs.bridge.slack.state())["responses"][before:]]
        return answers if len(answers) >= count else None
    return await eventually(found, what=f"{count} answer(s)")


async def state_responses(runs: TwoRuns) -> int:
    return len((await runs.bridge.slack.state())["responses"])


async def test_admins_connect_addresses_from_slack_and_matrix(
        runs: TwoRuns, services: Services, http: aiohttp.ClientSession) -> None:
    billing = services.email("billing")
    # A plain member is refused, with the reason; nothing changes.
    refused = await slack_command(runs, "second", BOB, f"route add {billing}")
    assert "Not allowed" in refused and "admins" in refused
    assert billing not in await slack_command(runs, "second", BOB, "route list")
    # An address this deployment does not receive mail for is refused too.
    outside = await slack_command(runs, "second", DANA, "route add someone@elsewhere.test")
    assert "not at a domain whose mail reaches Switchboard" in outside
    # The workspace admin connects it, through the second process.
    added = await slack_command(runs, "second", DANA, f"route add {billing} Billing desk "
                                                      "replies=email")
    assert f"Connected: mail to {billing} now comes to this room" in added
    # The next email to it, received by the first process, arrives in the channel.
    mail = make_mail(services.email("carol"), billing, "Invoice 77", "Please find it.")
    await send_mail(services, mail, port=runs.bridge.listener_port)

    async def posted() -> list[dict[str, Any]] | None:
        return await channel_posts(runs, "Invoice 77") or None

    card = (await eventually(posted, what="the email in the routed channel"))[0]
    assert f"Billing desk &lt;{billing}&gt;" in str(card["blocks"])
    # replies=email: a plain message in the card's thread answers the sender by email.
    await clear_mailbox(services, "carol")
    await runs.slack_to("first").event({
        "type": "message", "channel": CHANNEL, "channel_type": "channel", "user": BOB,
        "text": "Paid today &amp; thanks", "ts": f"{time.time():.6f}",
        "thread_ts": card["ts"]})

    async def answered() -> bool:
        return any(b"Paid today & thanks" in m for m in await mailbox(services, "carol"))

    await eventually(answered, what="the thread reply emailed to the sender")
    # Everyone may list the routes, each with where it came from.
    listing = await slack_command(runs, "first", BOB, "route list")
    assert f"{billing} → here" in listing and "added in chat by" in listing
    assert services.email("support") in listing and "from the settings" in listing
    # A route of the settings is read-only from chat.
    settings_route = await slack_command(runs, "first", DANA,
                                         f"route remove {services.email('support')}")
    assert "routed in Switchboard's settings" in settings_route
    # A channel the bot is not in cannot be routed to (its posts would fail).
    await runs.bridge.slack.add_channel("C0NOBOT001", "nobot", [DANA], bot_is_member=False)
    absent = await slack_command(runs, "first", DANA, f"route add {billing}", "C0NOBOT001")
    assert "invite it first" in absent
    # The same address cannot be taken by another room.
    await runs.bridge.slack.add_channel("C0OTHER001", "other", [DANA])
    taken = await slack_command(runs, "first", DANA, f"route add {billing}", "C0OTHER001")
    assert "already connected to another channel or room" in taken

    # Matrix: a plain member of the room is refused; a moderator connects an address.
    alice = runs.bridge.alice
    run_as_alice = matrix_runner(runs.bridge, alice)
    helpdesk = f"helpdesk-{uuid.uuid4().hex[:6]}@{billing.partition('@')[2]}"
    refused = await run_as_alice(f"route add {helpdesk}")
    assert "Not allowed" in refused and "power level 50" in refused
    await promote(services, http, runs.bridge.room, alice.user_id, 50)
    added = await run_as_alice(f"route add {helpdesk} name=Help desk senders=any")
    assert f"Connected: mail to {helpdesk}" in added
    # Received by the second process (its SMTP listener knows the route at once).
    mail = make_mail(services.email("carol"), helpdesk, "Printer on fire", "Help!")
    await send_mail(services, mail, port=runs.other_listener)

    async def in_room() -> list[dict[str, Any]] | None:
        return [e for e in await runs.bridge.room_posts()
                if "Printer on fire" in e["content"]["body"]] or None

    event = (await eventually(in_room, what="the email in the Matrix room"))[0]
    assert f"To: Help desk <{helpdesk}>" in event["content"]["body"]
    removed = await run_as_alice(f"route remove {helpdesk}")
    assert f"Removed: mail to {helpdesk}" in removed


@pytest.mark.parametrize("version", [None, "10"])  # the homeserver's default, and older
async def test_a_rooms_creator_administers_it_in_every_room_version(
        runs: TwoRuns, services: Services, http: aiohttp.ClientSession,
        version: str | None) -> None:
    """In room version 12 (Synapse's default) the creator has unlimited power and is not
    in m.room.power_levels; in older versions the creator has level 100 there. Either
    way the person who made the room may connect addresses to it and is told of held
    mail; a member at level 0 may not."""
    alice = runs.bridge.alice
    carol = await MatrixUser(services, "carol", http).login()
    bot = services.env["SWITCHBOARD_MATRIX_USER"]
    body: dict[str, Any] = {"name": f"made by alice {uuid.uuid4().hex[:6]}",
                            "invite": [bot, carol.user_id]}
    if version is not None:
        body["room_version"] = version
    room = (await alice.call("POST", "/createRoom", body))["room_id"]
    try:
        await carol.join(room)
        create = await alice.call("GET", f"/rooms/{room}/state/m.room.create")
        assert create["room_version"] == (version or "12")
        levels = await alice.call("GET", f"/rooms/{room}/state/m.room.power_levels")
        assert (alice.user_id in levels.get("users", {})) == (version is not None)

        async def bot_joined() -> bool:
            members = await alice.call("GET", f"/rooms/{room}/joined_members")
            return bot in members.get("joined", {})

        await eventually(bot_joined, what="the bot in alice's room")
        refused = await matrix_runner(runs.bridge, carol, room)("route add x@example.com")
        assert "Not allowed" in refused
        desk = f"desk-{uuid.uuid4().hex[:6]}@{services.email('x').partition('@')[2]}"
        added = await matrix_runner(runs.bridge, alice, room)(f"route add {desk}")
        assert f"Connected: mail to {desk}" in added
        matrix = runs.bridge.runtime.matrix
        assert matrix is not None
        admins = await matrix.room_admins(room, 10)
        assert [a.value for a in admins] == [alice.user_id]  # told of held mail
    finally:
        for member in (carol, alice):
            await member.leave(room)
        await carol.logout()


async def promote(services: Services, http: aiohttp.ClientSession, room: str, user: str,
                  level: int) -> None:
    """The room's creator (the bot) gives ``user`` a power level."""
    bot = await MatrixUser(services, "switchboard", http).login()
    levels = await bot.call("GET", f"/rooms/{room}/state/m.room.power_levels")
    levels.setdefault("users", {})[user] = level
    await bot.call("PUT", f"/rooms/{room}/state/m.room.power_levels", levels)


async def test_held_mail_is_offered_to_the_admins(runs: TwoRuns, services: Services) -> None:
    billing = services.email("billing")
    added = await slack_command(runs, "first", DANA, f"route add {billing} senders=verified")
    assert "Connected" in added
    outsider = services.email("eve")

    async def unverified(subject: str) -> None:
        # Sent from an address the domain's SPF does not list, unsigned: not authenticated.
        mail = make_mail(outsider, billing, subject, f"Body of {subject}")
        await send_mail(services, mail, port=runs.bridge.listener_port, source=ELSEWHERE)

    await unverified("Urgent wire transfer")
    notice = await held_notice(runs, DANA, "Urgent wire transfer")
    assert "is not authenticated" in str(notice["blocks"])
    assert not [m for m in await slack_dm(runs.bridge, BOB) if "Held" in str(m["blocks"])]
    assert not await channel_posts(runs, "Urgent wire transfer")
    held_id = button(notice, "held_post")
    assert held_id in await pending(runs)
    # Someone who is not an admin cannot post it (a forged click).
    to_first = runs.slack_to("first")
    before = await state_responses(runs)
    await to_first.block_action(BOB, "bob", notice["channel"], notice, "held_post", held_id)
    assert "Not allowed" in (await responses_after(runs, before, 1))[0]
    # The admin clicks *Post anyway* twice at once: it is posted once.
    before = await state_responses(runs)
    await asyncio.gather(*(to_first.block_action(DANA, "dana", notice["channel"], notice,
                                                 "held_post", held_id) for _ in range(2)))
    told = await responses_after(runs, before, 2)
    assert sum("Posted the email" in a for a in told) == 1, told
    assert sum("Already decided: posted by" in a for a in told) == 1, told
    assert len(await channel_posts(runs, "Urgent wire transfer")) == 1
    assert held_id not in await pending(runs)

    # *Discard*: it leaves pending, and nothing is posted.
    await unverified("Gift cards needed")
    notice = await held_notice(runs, DANA, "Gift cards needed")
    discard_id = button(notice, "held_discard")
    assert discard_id in await pending(runs)
    await to_first.block_action(DANA, "dana", notice["channel"], notice, "held_discard",
                                discard_id)
    await eventually(lambda: _not_in_pending(runs, discard_id), what="discarded from pending")
    assert not await channel_posts(runs, "Gift cards needed")

    # *Allow this sender*: posted, and the sender's next email is no longer held.
    await unverified("Quarterly figures")
    notice = await held_notice(runs, DANA, "Quarterly figures")
    await to_first.block_action(DANA, "dana", notice["channel"], notice, "held_allow",
                                button(notice, "held_allow"))
    await eventually(lambda: channel_posts(runs, "Quarterly figures"), what="allowed, posted")
    await unverified("Figures, part two")
    await eventually(lambda: channel_posts(runs, "Figures, part two"),
                     what="the allowed sender's next email posted directly")

    # Status: the admin sees the room's routes, the last email, what waits, and health.
    async def healthy() -> str | None:
        # Each process reports its links every few seconds: the mailbox's reader too.
        status = await slack_command(runs, "first", DANA, "status")
        return status if f"mailbox {services.email('switchboard')} ok" in status else None

    status = await eventually(healthy, what="the mailbox reported healthy")
    assert billing in status and "senders=verified" in status
    assert "Last email bridged here" in status and "Figures, part two" in status
    assert "Held for admins here: 0" in status
    assert "redis ok" in status and "matrix ok" in status
    assert "Not allowed" in await slack_command(runs, "first", BOB, "status")


async def _not_in_pending(runs: TwoRuns, held_id: str) -> bool:
    return held_id not in await pending(runs)


async def test_matrix_admin_decides_in_the_room(runs: TwoRuns, services: Services,
                                                http: aiohttp.ClientSession) -> None:
    alice = runs.bridge.alice
    await promote(services, http, runs.bridge.room, alice.user_id, 50)
    run_as_alice = matrix_runner(runs.bridge, alice)
    domain = services.email("x").partition("@")[2]
    desk = f"desk-{uuid.uuid4().hex[:6]}@{domain}"
    assert "Connected" in await run_as_alice(f"route add {desk} senders=verified")
    mail = make_mail(services.email("eve"), desk, "Reset my password", "now please")
    await send_mail(services, mail, port=runs.bridge.listener_port, source=ELSEWHERE)

    async def held() -> str | None:
        status = await run_as_alice("status")
        return status if "Reset my password" in status else None

    status = await eventually(held, what="the held email in the room's status")
    held_id = next(w for w in status.split() if w.startswith("h") and len(w) == 17)
    assert "Posted the email" in await run_as_alice(f"post {held_id}")
    assert "Already decided" in await run_as_alice(f"post {held_id}")

    async def in_room() -> bool:
        return any("Reset my password" in e["content"]["body"]
                   for e in await runs.bridge.room_posts())

    await eventually(in_room, what="the posted email in the room")


async def test_route_rules_rates_and_the_review_room(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    review = "C0REVIEW01"
    async with running_bridge(services, slack, http, SWITCHBOARD_SENDER_RATE="2/3600",
                              SWITCHBOARD_REVIEW_ROOM=f"slack:{review}") as bridge:
        await slack.add_user(DANA, "dana", services.email("dana"), is_admin=True)
        await slack.add_channel(CHANNEL, "billing", [DANA, BOB])
        await slack.add_channel(review, "mail-review", [DANA])
        runs = TwoRuns(bridge, bridge.env)  # one run is enough here
        billing = services.email("billing")
        carol = services.email("carol")
        assert "Connected" in await slack_command(runs, "first", DANA,
                                                  f"route add {billing} attachments=names")
        # attachments=names: the card lists the file, nothing is uploaded into the room.
        mail = make_mail(carol, billing, "Report attached", "See the report.",
                         attachments=(("report.pdf", b"%PDF-1.4 report"),))
        await send_mail(services, mail, port=bridge.listener_port)
        card = (await eventually(lambda: channel_posts(runs, "Report attached"),
                                 what="the card"))[0]
        assert "report.pdf" in str(card["blocks"]) and "lists them by name" in str(card["blocks"])
        assert not await bridge.slack_files(CHANNEL)

        # attachments=hold: an email with a blocked type waits for the admins.
        assert "Changed" in await slack_command(runs, "first", DANA,
                                                f"route set {billing} attachments=hold")
        mail = make_mail(carol, billing, "New tool", "Run this.",
                         attachments=(("setup.exe", b"MZ\x90\x00"),))
        await send_mail(services, mail, port=bridge.listener_port)
        notice = await held_notice(runs, DANA, "New tool")
        assert "never posted" in str(notice["blocks"])
        assert not await channel_posts(runs, "New tool")

        # Over the sender's rate: held too, and no sender to allow past a rate.
        mail = make_mail(carol, billing, "Third in an hour", "One more.")
        await send_mail(services, mail, port=bridge.listener_port)
        notice = await held_notice(runs, DANA, "Third in an hour")
        assert "rate limit" in str(notice["blocks"])
        actions = [e["action_id"] for b in notice["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]
        assert actions == ["held_post", "held_discard", "held_block"]  # none to allow
        # *Block sender* on it: discarded, and her next email is not held again, only
        # counted (nobody is asked about a blocked sender).
        before = await state_responses(runs)
        await runs.slack_to("first").block_action(DANA, "dana", notice["channel"], notice,
                                                  "held_block", button(notice, "held_block"))
        decided = await responses_after(runs, before, 1)
        assert f"Blocked {carol} on {billing}" in decided[0] and "Discarded" in decided[0]
        mail = make_mail(carol, billing, "Fourth in an hour", "And more.")
        await send_mail(services, mail, port=bridge.listener_port)

        async def counted() -> str | None:
            said = await slack_command(runs, "first", DANA, "status")
            return said if "1 email stopped" in said else None
        await eventually(counted, what="the blocked email counted")
        assert not [m for m in await slack_dm(bridge, DANA) if "Fourth in an hour"
                    in str(m["blocks"])]

        # No route: offered in the review room, and posted there when an admin says so.
        stray = f"nobody-{uuid.uuid4().hex[:6]}@{billing.partition('@')[2]}"
        mail = make_mail(services.email("dave"), stray, "Where does this go?", "Hello?")
        await send_mail(services, mail, port=bridge.listener_port)
        notice = await held_notice(runs, DANA, "Where does this go?")
        assert "to an address with no route" in str(notice["blocks"])
        await runs.slack_to("first").block_action(DANA, "dana", notice["channel"], notice,
                                                  "held_post", button(notice, "held_post"))

        async def in_review() -> bool:
            return any("Where does this go?" in str(m["blocks"])
                       for m in await bridge.slack_posts(review))

        await eventually(in_review, what="the unrouted email posted in the review room")
        # An address at a domain Switchboard does not receive for is still refused.
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await send_mail(services, make_mail(carol, "x@elsewhere.test", "No", "no"),
                            port=bridge.listener_port)
