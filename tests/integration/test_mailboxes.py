"""Several mailboxes: IMAP accounts with their own logins (a password, an OAuth2 grant),
folders and routes, each leased on its own, one failing without stopping the others."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, Bridge, other_run, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_in_chat import sender
from tests.mailhelp import clear_mailbox, eventually, make_mail, send_mail
from tests.oauthserver import CLIENT_ID, AuthServer
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration

DESK = "C0DESK0001"
DANA = "U0DANA0001"  # a workspace admin: `status` is for admins


def mailboxes_toml(services: Services, auth: AuthServer) -> str:
    """Dave's account logs in with OAuth2 (no password anywhere) and goes to #desk;
    Carol's has a wrong password. The environment form (Switchboard's own, by password)
    stays as it is."""
    imap = f'host = "127.0.0.1"\nport = {services.env["SWITCHBOARD_IMAP_PORT"]}\n' \
           f'tls = "{services.env["SWITCHBOARD_IMAP_TLS"]}"\n'
    return (f'[[mailboxes]]\nname = "Desk"\n{imap}user = "{services.email("dave")}"\n'
            f'route = "slack:{DESK}"\n'
            f'[mailboxes.oauth2]\ntoken_url = "http://127.0.0.1:{services.env["SB_OAUTH_PORT"]}'
            f'/token"\nclient_id = "{CLIENT_ID}"\n'
            f'refresh_token = "{auth.refresh_token(services.email("dave"))}"\n'
            f'[[mailboxes]]\nname = "Broken"\n{imap}user = "{services.email("carol")}"\n'
            f'password = "not-the-password"\nroute = "slack:C0BROKEN01"\n')


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                 auth: AuthServer, tmp_path: Path) -> AsyncIterator[Bridge]:
    for user in ("dave", "carol"):
        await clear_mailbox(services, user)
    config = tmp_path / "switchboard.toml"
    config.write_text(mailboxes_toml(services, auth))
    await slack.add_user(DANA, "dana", services.email("dana"), is_admin=True)
    await slack.add_channel(DESK, "desk", [DANA, *SLACK_PEOPLE.values()])
    async with running_bridge(services, slack, http, broken=("Broken",),
                              SWITCHBOARD_CONFIG=str(config)) as b:
        yield b


async def posts_in(bridge: Bridge, channel: str, words: str) -> list[dict[str, object]]:
    return [m for m in await bridge.slack.messages(channel) if words in str(m["blocks"])]


async def status(bridge: Bridge) -> str:
    before = len((await bridge.slack.state())["responses"])
    code, _ = await sender(bridge).slash_command(DANA, "dana", DESK, "status")
    assert code == 200

    async def answer() -> str | None:
        responses = (await bridge.slack.state())["responses"]
        return "\n".join(b["text"]["text"] for b in responses[-1].get("blocks", [])
                         if b["type"] == "section") if len(responses) > before else None
    return await eventually(answer, what="the answer to /switchboard status")


async def test_two_accounts_two_logins_two_rooms_each_leased_one_failing(
        bridge: Bridge, auth: AuthServer, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    services = bridge.services
    alice = f"Alice <{services.email('alice')}>"
    # A second `run` on the same settings: it stands by for every mailbox the first reads.
    async with other_run(bridge.env, tmp_path / "second.log", http) as second:
        # Mail to the shared support address: Switchboard's own mailbox, by password.
        await send_mail(services, make_mail(alice, services.email("support"),
                                            "Password mailbox", "In by the password."))
        # Mail to Dave's address: his own mailbox, read with an OAuth2 token, to #desk.
        await send_mail(services, make_mail(alice, services.email("dave"),
                                            "Token mailbox", "In by the token."))
        desk = await eventually(lambda: posts_in(bridge, DESK, "Token mailbox"),
                                what="the Desk mailbox's email in #desk")
        await eventually(lambda: posts_in(bridge, SLACK_CHANNEL, "Password mailbox"),
                         what="the support email in #support")
        assert auth.introspected >= 1  # Dovecot checked Dave's bearer token
        assert "Desk" in str(desk[0]["blocks"])  # the card names the mailbox
        assert not await posts_in(bridge, SLACK_CHANNEL, "Token mailbox")
        assert not await posts_in(bridge, DESK, "Password mailbox")

        # Each account and folder has its own lease, held by one process: the first.
        runtime = bridge.runtime
        for ingest in runtime.ingests:
            held = await runtime.store.redis.get(runtime.store.keys.lease(ingest.lease_name))
            assert held == ingest.holder, ingest.name
        # The broken one fails over and over without holding the others back.
        broken = next(i for i in runtime.ingests if i.name == "Broken")
        assert not broken.connected and broken.sessions == 0

        # Once more, with both processes up: each email posted once.
        await send_mail(services, make_mail(alice, services.email("dave"),
                                            "Second token mail", "Again."))
        await eventually(lambda: posts_in(bridge, DESK, "Second token mail"),
                         what="the second Desk email")
        second_log = second.output()
    assert len(await posts_in(bridge, DESK, "Token mailbox")) == 1
    assert len(await posts_in(bridge, DESK, "Second token mail")) == 1
    assert "Traceback" not in second_log

    # Health, each mailbox on its own: status in chat, /readyz, metrics, doctor.
    async def both_reported() -> str | None:
        said = await status(bridge)
        return said if "mailbox Desk ok" in said and "mailbox Broken DOWN" in said else None
    said = await eventually(both_reported, what="status naming each mailbox")
    assert f"mailbox {services.email('switchboard')} ok" in said

    port = bridge.env["SWITCHBOARD_HTTP_LISTEN"].rpartition(":")[2]
    async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
        ready = await answer.json()
    assert ready["checks"]["mailbox Desk"] is True
    assert ready["checks"]["mailbox Broken"] is False
    async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        metrics = await answer.text()
    assert 'switchboard_mailbox_connected{mailbox="Desk"} 1.0' in metrics
    assert 'switchboard_mailbox_connected{mailbox="Broken"} 0.0' in metrics

    env = {**os.environ, **bridge.env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    code, out, _ = await run_cli("doctor", "--json", env=env)
    found: dict[str, list[dict[str, str]]] = {}
    for check in json.loads(out)["checks"]:
        found.setdefault(check["name"], []).append(check)
    assert code == 1
    assert found["imap Desk"][0]["status"] == "OK"
    assert "OAuth2 XOAUTH2 (refresh_token grant)" in found["imap Desk"][0]["detail"]
    assert found["imap Broken"][0]["status"] == "FAIL"
    assert "its [[mailboxes]] table (Broken)" in found["imap Broken"][0]["fix"]
    assert found[f"imap {services.email('switchboard')}"][0]["status"] == "OK"
