"""Test-side helpers: read and steer the local Slack server, and send Switchboard the
signed requests Slack would send (slash commands, interactivity, events)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp


class SlackControl:
    """Reads and steers the local Slack server through its ``/_test`` endpoints."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession,
                 team: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.team = team  # the workspace steered; None: the server's first

    @property
    def params(self) -> dict[str, str]:
        return {"team": self.team} if self.team else {}

    def workspace(self, team: str) -> SlackControl:
        """The same server, steering another of its workspaces."""
        return SlackControl(self.base_url, self.session, team)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def _post(self, action: str, data: dict[str, Any] | None = None) -> Any:
        async with self.session.post(f"{self.base_url}/_test/{action}", json=data or {},
                                     params=self.params) as r:
            r.raise_for_status()
            if r.content_type == "application/json":
                return await r.json()
            return await r.read()

    async def state(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/_test/state", params=self.params) as r:
            r.raise_for_status()
            result: dict[str, Any] = await r.json()
            return result

    async def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [m for m in (await self.state())["messages"]
                if channel is None or m["channel"] == channel]

    async def count(self, channel: str | None = None) -> int:
        params = {**self.params, **({"channel": channel} if channel else {})}
        async with self.session.get(f"{self.base_url}/_test/count", params=params) as r:
            r.raise_for_status()
            return int((await r.json())["messages"])

    async def reset(self) -> None:
        await self._post("reset")

    async def add_user(self, id: str, name: str, email: str, presence: str = "active",
                       is_admin: bool = False) -> None:
        await self._post("user", {"id": id, "name": name, "real_name": name.title(),
                                  "email": email, "presence": presence,
                                  "is_admin": is_admin})

    async def add_channel(self, id: str, name: str, members: list[str],
                          bot_is_member: bool = True) -> None:
        await self._post("channel", {"id": id, "name": name, "members": members,
                                     "bot_is_member": bot_is_member})

    async def set_presence(self, user: str, presence: str) -> None:
        await self._post("presence", {"user": user, "presence": presence})

    async def limits(self, on: bool) -> None:
        """Slack's documented rate limits on (as from the start) or off (a benchmark's
        floor without them), for the whole server; their buckets start full."""
        await self._post("limits", {"on": on})

    async def throttled(self) -> list[list[Any]]:
        """The 429s the documented limits answered: [method, channel, when]."""
        return list((await self.state())["throttled"])

    async def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        await self._post("ratelimit", {"method": method, "times": times,
                                       "retry_after": retry_after})

    async def fail(self, method: str, times: int = 1, status: int = 500) -> None:
        await self._post("fail", {"method": method, "times": times, "status": status})

    async def slow(self, method: str, seconds: float, times: int = 1,
                   after: bool = False) -> None:
        """Answer ``method`` ``seconds`` late, ``times`` times; with ``after``, carry the
        call out first and only then wait."""
        await self._post("slow", {"method": method, "seconds": seconds, "times": times,
                                  "after": after})

    async def user_message(self, channel: str, user: str, text: str,
                           thread_ts: str | None = None) -> dict[str, Any]:
        """A person's own message in a channel (what the Events API would report)."""
        return dict(await self._post("message", {"channel": channel, "user": user,
                                                 "text": text, "thread_ts": thread_ts}))

    async def set_scopes(self, scopes: list[str]) -> None:
        await self._post("scopes", {"scopes": scopes})

    async def new_trigger(self) -> str:
        return str((await self._post("trigger"))["trigger_id"])

    async def new_response_url(self) -> str:
        return str((await self._post("response_url"))["response_url"])

    async def add_workspace(self, team_id: str, team_name: str) -> SlackControl:
        """A workspace that has not installed the app yet."""
        await self._post("workspace", {"team_id": team_id, "team_name": team_name})
        return self.workspace(team_id)

    async def uninstall(self) -> None:
        """The app removed from this workspace: its bot token is revoked."""
        await self._post("uninstall")

    async def envelope(self, kind: str, payload: dict[str, Any], wait: float = 10
                       ) -> dict[str, Any]:
        """One Socket Mode envelope to the app; ``{"acked", "payload"}`` once acked (or
        after ``wait`` seconds without)."""
        return dict(await self._post("envelope", {"type": kind, "payload": payload,
                                                  "wait": wait}))

    async def socket_disconnect(self, reason: str = "refresh_requested",
                                close_after: float | None = None) -> None:
        await self._post("socket_disconnect", {"reason": reason, "close_after": close_after})

    async def lose_acks(self, count: int) -> None:
        """The next ``count`` acks never reach Slack, and then the connection drops."""
        await self._post("lose_acks", {"count": count})

    async def socket(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/_test/socket") as r:
            r.raise_for_status()
            return dict(await r.json())

    async def file_content(self, file_id: str) -> bytes:
        content = await self._post("file", {"id": file_id})
        return bytes(content)


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request signature: HMAC-SHA256 over ``v0:<timestamp>:<body>``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class SlackSender:
    """Sends Switchboard's Slack endpoint what Slack sends, shaped and signed as documented."""

    def __init__(self, endpoint: str, signing_secret: str, control: SlackControl,
                 team_id: str, team_domain: str = "switchboard-test",
                 api_app_id: str = "A0SWITCHB1") -> None:
        self.endpoint = endpoint
        self.secret = signing_secret
        self.control = control
        self.team = {"id": team_id, "domain": team_domain}
        self.api_app_id = api_app_id

    async def _send(self, body: bytes, content_type: str,
                    headers: dict[str, str] | None = None) -> tuple[int, str]:
        all_headers = {"Content-Type": content_type, **sign(self.secret, body), **(headers or {})}
        async with self.control.session.post(self.endpoint, data=body, headers=all_headers) as r:
            return r.status, await r.text()

    async def send_raw(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """For tests of refused requests: the caller picks the headers."""
        async with self.control.session.post(self.endpoint, data=body, headers=headers) as r:
            return r.status, await r.text()

    def _user(self, user_id: str, name: str) -> dict[str, Any]:
        return {"id": user_id, "username": name, "name": name, "team_id": self.team["id"]}

    async def slash_command(self, user_id: str, user_name: str, channel_id: str, text: str,
                            command: str = "/switchboard") -> tuple[int, str]:
        form = {
            "token": "deprecated-verification-token", "team_id": self.team["id"],
            "team_domain": self.team["domain"], "channel_id": channel_id,
            "channel_name": "directmessage" if channel_id.startswith("D") else "general",
            "user_id": user_id, "user_name": user_name, "command": command, "text": text,
            "api_app_id": self.api_app_id, "is_enterprise_install": "false",
            "response_url": await self.control.new_response_url(),
            "trigger_id": await self.control.new_trigger(),
        }
        return await self._command(form)

    async def _command(self, form: dict[str, str]) -> tuple[int, str]:
        return await self._send(urlencode(form).encode(), "application/x-www-form-urlencoded")

    async def _interactive(self, payload: dict[str, Any]) -> tuple[int, str]:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self._send(body, "application/x-www-form-urlencoded")

    async def _event(self, body: dict[str, Any]) -> tuple[int, str]:
        return await self._send(json.dumps(body).encode(), "application/json")

    async def block_action(self, user_id: str, user_name: str, channel_id: str,
                           message: dict[str, Any], action_id: str, value: str,
                           block_id: str = "actions", ephemeral: bool = False
                           ) -> tuple[int, str]:
        ts = message["ts"]
        return await self._interactive({
            "type": "block_actions", "user": self._user(user_id, user_name),
            "api_app_id": self.api_app_id, "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel_id,
                          "is_ephemeral": ephemeral},
            "trigger_id": await self.control.new_trigger(), "team": self.team,
            "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": "general"},
            "message": {"type": "message", "ts": ts, "text": message.get("text", ""),
                        "blocks": message.get("blocks", []), "user": message.get("user")},
            "response_url": await self.control.new_response_url(),
            "actions": [{"action_id": action_id, "block_id": block_id, "value": value,
                         "type": "button", "action_ts": f"{time.time():.6f}",
                         "text": {"type": "plain_text", "text": action_id, "emoji": True}}],
        })

    async def view_submission(self, user_id: str, user_name: str, view: dict[str, Any],
                              values: dict[str, dict[str, str]]) -> tuple[int, str]:
        """``values``: block_id -> {action_id: typed text}, as a plain_text_input reports it."""
        state = {block: {action: {"type": "plain_text_input", "value": text}
                         for action, text in actions.items()}
                 for block, actions in values.items()}
        return await self._interactive({
            "type": "view_submission", "team": self.team, "user": self._user(user_id, user_name),
            "api_app_id": self.api_app_id, "token": "deprecated-verification-token",
            "trigger_id": await self.control.new_trigger(),
            "view": {**view, "state": {"values": state}}, "response_urls": [],
            "is_enterprise_install": False, "enterprise": None,
        })

    async def message_shortcut(self, user_id: str, user_name: str, channel_id: str,
                               message: dict[str, Any], callback_id: str) -> tuple[int, str]:
        return await self._interactive({
            "type": "message_action", "callback_id": callback_id,
            "trigger_id": await self.control.new_trigger(), "team": self.team,
            "user": self._user(user_id, user_name), "api_app_id": self.api_app_id,
            "token": "deprecated-verification-token",
            "channel": {"id": channel_id, "name": "general"},
            "message": message, "message_ts": message["ts"],
            "response_url": await self.control.new_response_url(),
        })

    async def event(self, event: dict[str, Any]) -> tuple[int, str]:
        return await self._event({
            "token": "deprecated-verification-token", "team_id": self.team["id"],
            "api_app_id": self.api_app_id, "event": event, "type": "event_callback",
            "event_id": f"Ev{int(time.time() * 1000)}{secrets.token_hex(3).upper()}",
            "event_time": int(time.time()), "authorizations": [],
            "is_ext_shared_channel": False,
        })


class SocketSender(SlackSender):
    """The same requests, as Socket Mode envelopes through the local Slack's websocket:
    (200, the ack's payload as JSON or "") once acked, (504, "") if never."""

    def __init__(self, control: SlackControl, team_id: str,
                 team_domain: str = "switchboard-test") -> None:
        super().__init__("", "", control, team_id, team_domain)

    async def _deliver(self, kind: str, payload: dict[str, Any]) -> tuple[int, str]:
        answer = await self.control.envelope(kind, payload)
        if not answer["acked"]:
            return 504, ""
        return 200, json.dumps(answer["payload"]) if answer["payload"] else ""

    async def _command(self, form: dict[str, str]) -> tuple[int, str]:
        return await self._deliver("slash_commands", form)

    async def _interactive(self, payload: dict[str, Any]) -> tuple[int, str]:
        return await self._deliver("interactive", payload)

    async def _event(self, body: dict[str, Any]) -> tuple[int, str]:
        return await self._deliver("events_api", body)
