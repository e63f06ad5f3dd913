"""Many Slack workspaces: each installs the app through the OAuth v2 flow (the admin's
browser going from /slack/install to Slack's approval page and back), gets its own email
routes, posts with its own token, and is its own customer; an uninstall stops that
workspace only; a forged or replayed OAuth state installs nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.metering import Service
from bot.reports import current_month
from tests.bridge import SLACK_CHANNEL, Bridge, other_run, running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually, make_mail, send_mail
from tests.servers import free_port
from tests.slackapi.apps import AppCredentials
from tests.slackapi.client import SlackControl, SlackSender

pytestmark = pytest.mark.integration

FIRST = "T0SWITCH1"  # the local Slack's first workspace
SECOND = "T0SECOND1"
THIRD = "T0THIRD01"
SALES_CHANNEL = "C0SALES001"
ERIN = "U0ERIN0001"


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Bridge]:
    second = await slack.add_workspace(SECOND, "Second Co")
    await second.add_user(ERIN, "erin", services.email("erin"))
    await second.add_channel(SALES_CHANNEL, "sales", [ERIN])
    await slack.add_workspace(THIRD, "Third Co")
    routes = (f"{services.email('support')}=slack:{FIRST}/{SLACK_CHANNEL},"
              f"{services.email('sales')}=slack:{SECOND}/{SALES_CHANNEL}")
    async with running_bridge(services, slack, http, unset=("SWITCHBOARD_SLACK_BOT_TOKEN",),
                              **installs_env(slack, routes)) as running:
        yield running


def installs_env(slack: SlackControl, routes: str, **more: str) -> dict[str, str]:
    """Settings for workspaces installing the app (no pasted bot token)."""
    app, port = AppCredentials(), free_port()
    return {"SWITCHBOARD_SLACK_CLIENT_ID": app.client_id,
            "SWITCHBOARD_SLACK_CLIENT_SECRET": app.client_secret,
            "SWITCHBOARD_SLACK_AUTHORIZE_URL": f"{slack.base_url}/oauth/v2/authorize",
            "SWITCHBOARD_HTTP_LISTEN": f"127.0.0.1:{port}",
            "SWITCHBOARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SWITCHBOARD_ROUTES": routes, **more}


def base(bridge: Bridge) -> str:
    return f"http://127.0.0.1:{bridge.settings.http_listen[1]}"


class Browser:
    """The admin's browser. Bolt's state cookie is ``Secure`` (the install page is meant
    to be served over HTTPS); over the tests' plain loopback HTTP it is carried by hand,
    as a browser would carry it over HTTPS."""

    def __init__(self, bridge: Bridge, http: aiohttp.ClientSession) -> None:
        self.bridge = bridge
        self.http = http
        self.cookie = ""

    async def start_install(self) -> str:
        """Opens /slack/install: the "Add to Slack" link, to Slack's approval page."""
        async with self.http.get(f"{base(self.bridge)}/slack/install") as r:
            assert r.status == 200
            page = await r.text()
            cookie = r.cookies.get("slack-app-oauth-state")
            assert cookie is not None and cookie["secure"] and cookie["httponly"]
            self.cookie = f"slack-app-oauth-state={cookie.value}"
        link = unescape(re.search(r'href="([^"]+/oauth/v2/authorize[^"]+)"', page).group(1))
        query = parse_qs(urlsplit(link).query)
        assert query["redirect_uri"] == [f"{base(self.bridge)}/slack/oauth_redirect"]
        assert set(query["scope"][0].split(",")) >= {"chat:write", "commands",
                                                     "users:read.email"}
        return link

    async def approve(self, link: str, team: str) -> tuple[str, str]:
        """Approves on Slack's page for ``team``: the code and state it sends back."""
        async with self.http.get(f"{link}&team={team}", allow_redirects=False) as r:
            assert r.status == 302
            back = parse_qs(urlsplit(r.headers["Location"]).query)
        return back["code"][0], back["state"][0]

    async def come_back(self, code: str, state: str) -> tuple[int, str]:
        """Slack's redirect, followed to our /slack/oauth_redirect."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        async with self.http.get(f"{base(self.bridge)}/slack/oauth_redirect",
                                 params={"code": code, "state": state}, headers=headers) as r:
            return r.status, await r.text()


async def install(bridge: Bridge, team: str) -> tuple[int, str]:
    """The whole flow in one browser: install page, approve for ``team``, back to us."""
    async with aiohttp.ClientSession() as http:
        browser = Browser(bridge, http)
        link = await browser.start_install()
        return await browser.come_back(*await browser.approve(link, team))


async def card_in(control: SlackControl, channel: str, subject: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await control.messages(channel)
                     if subject in str(m["blocks"])), None)
    return await eventually(find, what=f"the card of {subject!r} in {channel}")


async def test_two_workspaces_install_and_each_gets_its_own_mail_and_charges(
        bridge: Bridge) -> None:
    services, store = bridge.services, bridge.runtime.store
    first, second = bridge.slack, bridge.slack.workspace(SECOND)
    for team in (FIRST, SECOND):
        status, page = await install(bridge, team)
        assert status == 200, page
    assert await store.workspaces.teams() == sorted([FIRST, SECOND])
    tokens = {team: (await store.workspaces.find(team) or {})["bot_token"]
              for team in (FIRST, SECOND)}
    assert tokens[FIRST] != tokens[SECOND]

    await send_mail(services, make_mail(services.email("alice"), services.email("support"),
                                        "For the first", "Hello first workspace"))
    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "For the second", "Hello second workspace"))
    one = await card_in(first, SLACK_CHANNEL, "For the first")
    two = await card_in(second, SALES_CHANNEL, "For the second")
    assert "For the second" not in str(await first.messages())
    assert "For the first" not in str(await second.messages())
    assert one["user"] == (await first.state())["workspace"]["bot_user_id"]
    assert two["user"] == (await second.state())["workspace"]["bot_user_id"]

    period = current_month()

    async def ingested(customer: str) -> int:
        usage = await store.usage.usage(customer, period)
        return usage.transactions.get(Service.EMAIL_INGESTED, 0)

    for team in (FIRST, SECOND):
        await eventually(lambda t=team: _equals(ingested(f"slack:{t}"), 1),
                         what=f"one email charged to slack:{team}")


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


async def test_buttons_in_a_workspace_use_that_workspaces_token(bridge: Bridge) -> None:
    services = bridge.services
    second = bridge.slack.workspace(SECOND)
    assert (await install(bridge, SECOND))[0] == 200
    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "Second buttons", "Press one"))
    card = await card_in(second, SALES_CHANNEL, "Second buttons")
    value = next(e["value"] for b in card["blocks"] if b["type"] == "actions"
                 for e in b["elements"] if e["action_id"] == "reply_in_chat")
    port = bridge.settings.http_listen[1]
    erin = SlackSender(f"http://127.0.0.1:{port}/slack/events",
                       bridge.env["SWITCHBOARD_SLACK_SIGNING_SECRET"], second, SECOND,
                       "second-co")
    status, _ = await erin.block_action(ERIN, "erin", SALES_CHANNEL, card, "reply_in_chat",
                                        value)
    assert status == 200

    async def opened() -> list[dict[str, Any]]:
        return list((await second.state())["views"])

    await eventually(opened, what="the reply modal, opened in the second workspace")
    assert not (await bridge.slack.state())["views"]


async def test_an_uninstall_stops_that_workspace_only(bridge: Bridge) -> None:
    services, store = bridge.services, bridge.runtime.store
    first, second = bridge.slack, bridge.slack.workspace(SECOND)
    for team in (FIRST, SECOND):
        assert (await install(bridge, team))[0] == 200
    await _uninstall(bridge, SECOND)

    await send_mail(services, make_mail(services.email("alice"), services.email("sales"),
                                        "After uninstall", "Nobody should see this"))
    await send_mail(services, make_mail(services.email("alice"), services.email("support"),
                                        "Still served", "The first goes on"))
    await card_in(first, SLACK_CHANNEL, "Still served")

    async def refused() -> list[str]:
        return [r.reason for r in await store.ingest.refusals(50)
                if r.subject == "After uninstall"]

    (reason,) = await eventually(refused, what="the second workspace's mail refused")
    assert "has not installed Switchboard" in reason and SECOND in reason
    assert "After uninstall" not in str(await second.messages())
    assert await store.workspaces.teams() == [FIRST]


async def _uninstall(bridge: Bridge, team: str) -> None:
    """The app removed from ``team`` on Slack, and Slack telling the first process."""
    workspace = bridge.slack.workspace(team) if team != FIRST else bridge.slack
    await workspace.uninstall()
    port = bridge.settings.http_listen[1]
    slack_says = SlackSender(f"http://127.0.0.1:{port}/slack/events",
                             bridge.env["SWITCHBOARD_SLACK_SIGNING_SECRET"], workspace, team)
    status, _ = await slack_says.event({"type": "app_uninstalled"})
    assert status == 200
    await eventually(lambda: _gone(bridge, team), what=f"the installation of {team} forgotten")


async def test_a_reinstall_through_one_process_is_followed_by_every_other(
        bridge: Bridge, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A second `switchboard run` that posted with a workspace's old token posts the next
    email with the new one after the workspace reinstalled through the first process,
    and refuses its mail (with the reason) once it uninstalled there."""
    services, store = bridge.services, bridge.runtime.store
    alice, support = services.email("alice"), services.email("support")
    assert (await install(bridge, FIRST))[0] == 200
    async with other_run(bridge.env, tmp_path / "second-run.log", http) as other:
        await send_mail(services, make_mail(alice, support, "Before the reinstall", "One"),
                        port=other.listener)
        await card_in(bridge.slack, SLACK_CHANNEL, "Before the reinstall")

        await _uninstall(bridge, FIRST)
        assert (await install(bridge, FIRST))[0] == 200
        await send_mail(services, make_mail(alice, support, "After the reinstall", "Two"),
                        port=other.listener)
        card = await card_in(bridge.slack, SLACK_CHANNEL, "After the reinstall")
        assert card["user"] == (await bridge.slack.state())["workspace"]["bot_user_id"]

        await _uninstall(bridge, FIRST)
        await send_mail(services, make_mail(alice, support, "After the uninstall", "Three"),
                        port=other.listener)

        async def refused() -> list[str]:
            return [r.reason for r in await store.ingest.refusals(50)
                    if r.subject == "After the uninstall"]

        (reason,) = await eventually(refused, what="the uninstalled workspace's mail refused")
        assert "has not installed Switchboard" in reason and FIRST in reason
        assert [r for r in await store.ingest.refusals(50)
                if r.subject in ("Before the reinstall", "After the reinstall")] == []
        subjects = [m for m in await bridge.slack.messages(SLACK_CHANNEL)
                    if "After the reinstall" in str(m["blocks"])]
        assert len(subjects) == 1


async def _gone(bridge: Bridge, team: str) -> bool:
    return await bridge.runtime.store.workspaces.find(team) is None


async def test_a_forged_or_replayed_state_installs_nothing(bridge: Bridge,
                                                          http: aiohttp.ClientSession) -> None:
    store = bridge.runtime.store
    browser = Browser(bridge, http)
    link = await browser.start_install()
    code, state = await browser.approve(link, THIRD)
    forged = link.replace(f"state={state}", "state=forged-by-someone")
    forged_code, _ = await browser.approve(forged, THIRD)
    status, page = await browser.come_back(forged_code, "forged-by-someone")
    assert status in (400, 401) and "Something Went Wrong" in page  # not a state we issued
    assert await store.workspaces.teams() == []
    status, page = await browser.come_back(code, state)  # the real one, once: installed
    assert status == 200, page
    assert await store.workspaces.teams() == [THIRD]
    await store.workspaces.remove(THIRD)
    # The same state again, with a fresh code: used up, refused.
    again, _ = await browser.approve(link, THIRD)
    status, _ = await browser.come_back(again, state)
    assert status in (400, 401)
    # A state we did issue, sent back from a browser that did not begin the flow.
    victim = Browser(bridge, http)
    code, state = await victim.approve(await victim.start_install(), THIRD)
    attacker = Browser(bridge, http)
    status, _ = await attacker.come_back(code, state)
    assert status in (400, 401)
    assert await store.workspaces.teams() == []


async def test_only_the_allowed_workspaces_may_install(services: Services, slack: SlackControl,
                                                       http: aiohttp.ClientSession) -> None:
    await slack.add_workspace(SECOND, "Second Co")
    await slack.add_workspace(THIRD, "Third Co")
    routes = f"{services.email('support')}=slack:{FIRST}/{SLACK_CHANNEL}"
    async with running_bridge(services, slack, http, unset=("SWITCHBOARD_SLACK_BOT_TOKEN",),
                              **installs_env(slack, routes, SWITCHBOARD_SLACK_INSTALL_TEAMS=
                                             f"{FIRST},{SECOND}")) as bridge:
        assert (await install(bridge, SECOND))[0] == 200
        status, page = await install(bridge, THIRD)
        assert status >= 400 and "Something Went Wrong" in page
        assert await bridge.runtime.store.workspaces.teams() == [SECOND]

