"""A running Switchboard for integration tests: real Redis, Dovecot, Postfix, Synapse and
the local Slack server; a Slack channel and a Matrix room routed from shared addresses."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.runtime.app import Runtime
from bot.settings import Settings
from tests.conftest import Services
from tests.mailhelp import MatrixUser, clear_mailbox, eventually
from tests.servers import free_port, start_switchboard
from tests.slackapi.client import SlackControl
from tests.slackapi.server import Workspace

SIGNING_SECRET = "test-signing-secret"
SLACK_CHANNEL = "C0SUPPORT1"
SLACK_PEOPLE = {"alice": "U0ALICE001", "bob": "U0BOB00001", "carol": "U0CAROL001"}


@dataclass
class Bridge:
    runtime: Runtime
    settings: Settings
    env: dict[str, str]
    room: str  # the Matrix room sales@ is routed to
    alice: MatrixUser  # a member of that room
    slack: SlackControl
    services: Services
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    serving: asyncio.Task[None] | None = None

    async def halt(self) -> None:
        """Stop this Switchboard, as SIGTERM would (``resume`` starts it again)."""
        self.stop.set()
        if self.serving is not None:
            await self.serving
            self.serving = None
        await self.runtime.close()

    async def resume(self) -> None:
        """Start it again, on the same store and settings."""
        self.runtime = await Runtime.start(self.settings)
        self.stop = asyncio.Event()
        self.serving = asyncio.create_task(self.runtime.serve(self.stop))
        await eventually(_caught_up(self.runtime), what="the IMAP ingest to catch up")

    async def restart(self) -> None:
        await self.halt()
        await self.resume()

    @property
    def listener_port(self) -> int:
        return int(self.env["SWITCHBOARD_SMTP_LISTEN"].rpartition(":")[2])

    @property
    def team(self) -> str:
        return Workspace().team_id

    async def slack_posts(self, channel: str = SLACK_CHANNEL) -> list[dict[str, Any]]:
        return [m for m in await self.slack.messages(channel) if not m["files"]]

    async def slack_files(self, channel: str = SLACK_CHANNEL) -> list[dict[str, Any]]:
        return [m for m in await self.slack.messages(channel) if m["files"]]

    async def room_posts(self) -> list[dict[str, Any]]:
        return [e for e in await self.alice.messages(self.room)
                if e["content"].get("msgtype") == "m.text"]


def bridge_env(services: Services, slack: SlackControl, prefix: str, room: str,
               unset: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    env = {k: v for k, v in services.env.items() if k.startswith("SWITCHBOARD_")}
    env.update({
        "SWITCHBOARD_REDIS_PREFIX": prefix,
        "SWITCHBOARD_SLACK_BOT_TOKEN": Workspace().bot_token,
        "SWITCHBOARD_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SWITCHBOARD_SLACK_API_URL": slack.api_url,
        "SWITCHBOARD_ROUTES": f"{services.email('support')}=slack:{SLACK_CHANNEL},"
                              f"{services.email('sales')}=matrix:{room}",
        "SWITCHBOARD_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "SWITCHBOARD_MAX_ATTACHMENT_BYTES": "5000000",
        "SWITCHBOARD_SMTP_LISTEN": f"127.0.0.1:{free_port()}",
        "SWITCHBOARD_SMTP_LISTEN_MAX_BYTES": "1000000",
        # The tests' Matrix people read with plain HTTP clients, which cannot decrypt; the
        # encryption tests turn encrypted DMs back on (the product's default).
        "SWITCHBOARD_MATRIX_ENCRYPTED_DMS": "false",
    })
    # Routes given by a test may name the test's room as {room}.
    env.update({k: v.replace("{room}", room) for k, v in extra.items()})
    for key in unset:
        env.pop(key, None)
    return env


async def prepare_chat(services: Services, slack: SlackControl,
                       http: aiohttp.ClientSession) -> tuple[str, MatrixUser]:
    """An empty bot mailbox, a Slack workspace with people, a Matrix room alice is in."""
    await clear_mailbox(services, "switchboard")
    for name, user_id in SLACK_PEOPLE.items():
        await slack.add_user(user_id, name, services.email(name))
    await slack.add_channel(SLACK_CHANNEL, "support", list(SLACK_PEOPLE.values()))
    bot = await MatrixUser(services, "switchboard", http).login()
    alice = await MatrixUser(services, "alice", http).login()
    created = await bot.call("POST", "/createRoom",
                             {"name": f"sales {uuid.uuid4().hex[:6]}", "invite": [alice.user_id]})
    await alice.join(created["room_id"])
    return created["room_id"], alice


@asynccontextmanager
async def running_bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                         unset: tuple[str, ...] = (), *, broken: tuple[str, ...] = (),
                         **extra: str) -> AsyncIterator[Bridge]:
    """A `switchboard run` in this process. ``broken``: mailboxes (by name) that are
    meant to fail, not waited for."""
    room, alice = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room, unset, **extra)
    settings = Settings.load(env)
    runtime = await Runtime.start(settings)
    stop = asyncio.Event()
    bridge = Bridge(runtime, settings, env, room, alice, slack, services, stop,
                    asyncio.create_task(runtime.serve(stop)))
    try:
        await eventually(_caught_up(runtime, broken), what="the IMAP ingest to catch up")
        yield bridge
    finally:
        bridge.stop.set()
        if bridge.serving is not None:
            await bridge.serving
        runtime = bridge.runtime
        keys = [k async for k in runtime.store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await runtime.store.redis.delete(*keys)
        if runtime.matrix is not None:
            # This test's device goes with its keys (its store's keys went above): every
            # device the bot keeps is in each client's key queries for it.
            with contextlib.suppress(Exception):
                await runtime.matrix.client.logout()
        await runtime.close()
        await retire_room(services, http, room, alice)


@dataclass
class OtherRun:
    """A second `switchboard run`, its own process on the same Redis and settings (its own
    HTTP and SMTP ports), as a second machine would run it."""

    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def listener(self) -> int:
        return int(self.env["SWITCHBOARD_SMTP_LISTEN"].rpartition(":")[2])

    @property
    def http_port(self) -> int:
        return int(self.env["SWITCHBOARD_HTTP_LISTEN"].rpartition(":")[2])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def other_run(env: dict[str, str], log: Path, http: aiohttp.ClientSession,
                    **changes: str) -> AsyncIterator[OtherRun]:
    """``switchboard run`` with ``env`` (and ``changes``), ready (``/readyz``) when yielded,
    stopped (SIGTERM, then SIGKILL) after."""
    env = dict(env, SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
               SWITCHBOARD_SMTP_LISTEN=f"127.0.0.1:{free_port()}", **changes)
    run = OtherRun(env, start_switchboard("run", env, log, new_session=True), log)
    try:
        async def ready() -> bool:
            if run.process.poll() is not None:
                raise AssertionError(f"the second run stopped:\n{run.output()[-3000:]}")
            try:
                async with http.get(f"http://127.0.0.1:{run.http_port}/readyz") as answer:
                    return answer.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, within=60, what="the second `switchboard run`")
        yield run
    finally:
        run.process.terminate()
        try:
            run.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(timeout=5)


async def retire_room(services: Services, http: aiohttp.ClientSession, room: str,
                      member: MatrixUser) -> None:
    """The test room left and forgotten by the bot and its member, and their test sessions
    ended: otherwise every test makes the next one's first sync slower."""
    try:
        bot = await MatrixUser(services, "switchboard", http).login()
        for user in (member, bot):
            await user.leave(room)
            await user.logout()
    except (AssertionError, aiohttp.ClientError) as exc:  # a homeserver left stopped
        print(f"could not retire the test room {room}: {exc}")


def _caught_up(runtime: Runtime, broken: tuple[str, ...] = ()) -> Any:
    async def probe() -> bool:
        return bool(runtime.ingests) and all(i.caught_up.is_set() for i in runtime.ingests
                                             if i.name not in broken)
    return probe
