"""Slack's contribution to `switchboard doctor`: the token works and has the scopes."""

from __future__ import annotations

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.doctor import Check
from bot.settings import Settings
from bridges.slack.manifest import BOT_SCOPES

# What the features need: the scopes of the app manifest (one list for both).
REQUIRED_SCOPES = BOT_SCOPES


async def probe_slack(settings: Settings) -> list[Check]:
    cfg = settings.slack
    if cfg is None:
        return [Check.warn("slack", "not configured: Slack is off",
                           "set SWITCHBOARD_SLACK_BOT_TOKEN and SWITCHBOARD_SLACK_SIGNING_SECRET")]
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
