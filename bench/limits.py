"""Bursts under the chat servers' own limits, each beside the time that limit allows (the
floor): into one Matrix room as the application service and as an ordinary bot account
(Synapse's default: 0.2 messages a second after a burst of 10), and into one Slack channel
and six with Slack's documented pace switched on (one a second per channel, short bursts)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from bench import run
from bench.run import RemoteSlack, Report
from bridges.matrix.registration import Registration
from tests.slackapi.limits import POST_BURST, POST_PER_CHANNEL

SYNAPSE_BURST, SYNAPSE_RATE = 10, 0.2  # rc_message, as scripts/services.sh keeps it


async def _client_call(http: aiohttp.ClientSession, env: dict[str, str], token: str,
                       method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call, as a person's client makes it (a 429 waited out: alice is rate-limited)."""
    while True:
        async with http.request(method, f"{env['SWITCHBOARD_MATRIX_HOMESERVER']}"
                                        f"/_matrix/client/v3{path}", json=body or {},
                                headers={"Authorization": f"Bearer {token}"}) as r:
            answer = await r.json()
        if r.status != 429:
            assert r.status == 200, f"{method} {path}: {r.status} {answer}"
            return answer
        await asyncio.sleep(answer.get("retry_after_ms", 1000) / 1000)


async def _alice(http: aiohttp.ClientSession, env: dict[str, str]) -> str:
    answer = await _client_call(http, env, "", "POST", "/login", {
        "type": "m.login.password", "password": env["SB_TEST_PASSWORD"],
        "identifier": {"type": "m.id.user", "user": "alice"}})
    return str(answer["access_token"])


async def matrix_burst(env: dict[str, str], slack: RemoteSlack, report: Report, count: int,
                       *, appservice: bool) -> None:
    """``count`` emails into a room alice made and invited the bot to, timed from their
    arrival in the mailbox to the last post."""
    bot = env["SB_APPSERVICE_BOT"] if appservice else env["SB_THROTTLED_BOT"]
    to = f"sales@{env['SB_MAIL_DOMAIN']}"
    async with aiohttp.ClientSession() as http:
        alice = await _alice(http, env)
        room = (await _client_call(http, env, alice, "POST", "/createRoom",
                                   {"name": "bench burst", "invite": [bot]}))["room_id"]
        run.clear_bot_mailbox(env)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        mode = {"SWITCHBOARD_MATRIX_REGISTRATION": env["SB_APPSERVICE_REGISTRATION"],
                "SWITCHBOARD_MATRIX_PASSWORD": "",
                "SWITCHBOARD_HTTP_LISTEN": f"127.0.0.1:{env['SB_APPSERVICE_PORT']}"} \
            if appservice else {"SWITCHBOARD_MATRIX_PASSWORD": env["SB_TEST_PASSWORD"],
                                "SWITCHBOARD_MATRIX_ENCRYPTION": "false"}
        settings, _ = run.settings_for(env, slack, prefix, **{
            "SWITCHBOARD_ROUTES": f"{to}=matrix:{room}",
            "SWITCHBOARD_MATRIX_HOMESERVER": env["SWITCHBOARD_MATRIX_HOMESERVER"],
            "SWITCHBOARD_MATRIX_USER": bot, **mode})
        async with run.serving(settings, prefix) as runtime:
            async def joined() -> bool:
                members = await _client_call(http, env, alice, "GET",
                                             f"/rooms/{room}/joined_members")
                return bot in members.get("joined", {})

            assert await run.wait_for(joined, 60, 0.2), f"{bot} did not join"
            await asyncio.to_thread(run.append_messages, env, count, to)
            started = time.perf_counter()

            async def all_posted() -> bool:
                return int(await runtime.store.redis.hlen(runtime.store.keys.posts())) >= count

            posted = await run.wait_for(all_posted, 1800, 0.1)
            elapsed = time.perf_counter() - started
            refused = runtime.matrix.throttled if runtime.matrix else 0
            waited = runtime.matrix.throttled_seconds if runtime.matrix else 0.0
        assert posted, "not every email was posted"
        if appservice:
            floor = await _raw_posts(http, env, room, count)
            floor_text = f"{floor:.1f} s (raw posts, no limit)"
        else:
            floor = max(0, count - SYNAPSE_BURST) / SYNAPSE_RATE
            floor_text = f"{floor:.0f} s ((N-{SYNAPSE_BURST})/{SYNAPSE_RATE} s)"
        await _client_call(http, env, alice, "POST", f"/rooms/{room}/leave")
    what = "application service" if appservice else "bot account on default limits"
    report.add(run.Row(f"{count} emails into one Matrix room, {what}",
                       f"{elapsed:.1f} s, {refused} M_LIMIT_EXCEEDED ({waited:.0f} s waited)",
                       floor_text, f"{elapsed / floor:.2f}" if floor else ""),
               messages=count, seconds=elapsed, floor=floor, refused=refused, waited=waited)


async def _raw_posts(http: aiohttp.ClientSession, env: dict[str, str], room: str,
                     count: int) -> float:
    """The application service itself posting ``count`` messages one after another."""
    token = Registration.load(env["SB_APPSERVICE_REGISTRATION"],
                              env["SB_MATRIX_SERVER_NAME"]).as_token
    started = time.perf_counter()
    for i in range(count):
        await _client_call(http, env, token, "PUT",
                           f"/rooms/{room}/send/m.room.message/floor{uuid.uuid4().hex}{i}",
                           {"msgtype": "m.text", "body": f"floor {i}"})
    return time.perf_counter() - started


async def slack_burst(env: dict[str, str], slack: RemoteSlack, report: Report, count: int,
                      channels: int) -> None:
    """``count`` emails spread over ``channels`` channels, Slack's limits on, timed to the
    last post; the floor is what Slack's pace allows (a burst, then one a second)."""
    await slack.fresh(limits=True)
    assert slack.control is not None
    names = [f"C0BURST{i:03d}" for i in range(channels)]
    for name in names:
        await slack.control.add_channel(name, name.lower(), [run.BOB, run.ALICE])
    desks = [f"desk{i}@{env['SB_MAIL_DOMAIN']}" for i in range(channels)]
    run.clear_bot_mailbox(env)
    for i, desk in enumerate(desks):
        share = count // channels + (1 if i < count % channels else 0)
        await asyncio.to_thread(run.append_messages, env, share, desk)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = run.settings_for(env, slack, prefix, **{
        "SWITCHBOARD_ROUTES": ",".join(f"{d}=slack:{c}" for d, c in zip(desks, names,
                                                                          strict=True)),
        "SWITCHBOARD_SLACK_POST_INTERVAL": "1.0"})
    throttled_before = len(await slack.control.throttled())
    async with run.serving(settings, prefix):
        started = time.perf_counter()

        async def all_posted() -> bool:
            assert slack.control is not None
            counts = [await slack.control.count(c) for c in names]
            return sum(counts) >= count

        posted = await run.wait_for(all_posted, 900, 0.1)
        elapsed = time.perf_counter() - started
    assert posted, "not every email was posted"
    refused = len(await slack.control.throttled()) - throttled_before
    most = count // channels + (1 if count % channels else 0)
    floor = max(0, most - POST_BURST) / POST_PER_CHANNEL
    report.add(run.Row(f"{count} emails into {channels} Slack channel(s), limits on",
                       f"{elapsed:.1f} s, {refused} answers of 429",
                       f"{floor:.0f} s (busiest channel: (N-{POST_BURST}) s)",
                       f"{elapsed / floor:.2f}" if floor else ""),
               messages=count, channels=channels, seconds=elapsed, floor=floor,
               refused=refused)
