"""Slack's contribution to `switchboard doctor`: the bot token works and has the scopes;
with installs, the install page's address; in Socket Mode, the app token opens a
connection and Slack says hello on it."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import aiohttp
from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.doctor import Check
from bot.settings import Settings, SlackSettings
from bridges.slack.manifest import BOT_SCOPES, INSTALL_PATH

# What the features need: the scopes of the app manifest (one list for both).
REQUIRED_SCOPES = BOT_SCOPES
HELLO_WAIT = 10.0


async def probe_slack(settings: Settings) -> list[Check]:
    cfg = settings.slack
    if cfg is None:
        return [Check.warn("slack", "not configured: Slack is off",
                           "set SWITCHBOARD_SLACK_BOT_TOKEN (one workspace) or "
                           "SWITCHBOARD_SLACK_CLIENT_ID (workspaces install the app); see "
                           "the README's Slack set-up")]
    checks = await _bot_token(cfg) if cfg.bot_token else _installs(settings)
    if cfg.app_token:
        checks.append(await _socket_mode(cfg))
    return checks


async def _bot_token(cfg: SlackSettings) -> list[Check]:
    client = AsyncWebClient(token=cfg.bot_token, base_url=cfg.api_url, timeout=10)
    try:
        answer = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        return [Check.fail("slack", f"auth.test at {cfg.api_url} answered {error}",
                           "check SWITCHBOARD_SLACK_BOT_TOKEN (a bot token, xoxb-…)")]
    except (ClientError, OSError, TimeoutError) as exc:
        return [Check.fail("slack", f"cannot reach {cfg.api_url}: {exc}",
                           "check SWITCHBOARD_SLACK_API_URL and the network")]
    granted = {s.strip() for s in answer.headers.get("x-oauth-scopes", "").split(",") if s}
    missing = [s for s in REQUIRED_SCOPES if s not in granted]
    checks = [Check.ok("slack", f"bot {answer.get('user_id')} in team {answer.get('team')} "
                                f"({answer.get('team_id')})")]
    if missing:
        checks.append(Check.fail("slack", f"the token lacks scopes: {', '.join(missing)}",
                                 "add them in the app's OAuth & Permissions page and reinstall"))
    return checks


def _installs(settings: Settings) -> list[Check]:
    url = settings.public_url.rstrip("/") + INSTALL_PATH
    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme != "https" and host not in ("localhost", "127.0.0.1", "::1"):
        return [Check.warn("slack", f"workspaces install at {url}, which is not https://: "
                                    "browsers keep the install flow's state cookie for "
                                    "HTTPS only, so installs fail",
                           "serve SWITCHBOARD_PUBLIC_URL over HTTPS (a TLS proxy in front)")]
    return [Check.ok("slack", f"workspaces install the app at {url}")]


async def _socket_mode(cfg: SlackSettings) -> Check:
    """Opens a Socket Mode connection and waits for Slack's ``hello``, then closes it
    (a running Switchboard's own connections are not disturbed: Slack allows several)."""
    client = AsyncWebClient(base_url=cfg.api_url, timeout=10)
    try:
        answer = await client.apps_connections_open(app_token=cfg.app_token or "")
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        return Check.fail("slack socket mode", f"apps.connections.open answered {error}",
                          "check SWITCHBOARD_SLACK_APP_TOKEN: an app-level token (xapp-…) "
                          "with connections:write, and Socket Mode turned on for the app")
    except (ClientError, OSError, TimeoutError) as exc:
        return Check.fail("slack socket mode", f"cannot reach {cfg.api_url}: {exc}",
                          "check SWITCHBOARD_SLACK_API_URL and the network")
    try:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(str(answer["url"])) as ws:
            message = await asyncio.wait_for(ws.receive(), HELLO_WAIT)
            hello = json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else {}
    except (ClientError, OSError, TimeoutError, ValueError) as exc:
        return Check.fail("slack socket mode", f"the websocket did not open: {exc}",
                          "let this host open outgoing websockets (wss://, port 443)")
    if hello.get("type") != "hello":
        return Check.fail("slack socket mode", f"Slack did not say hello: {hello!r}"[:200],
                          "check that Socket Mode is on in the app's settings")
    app = (hello.get("connection_info") or {}).get("app_id", "?")
    return Check.ok("slack socket mode", f"connected as app {app}")
