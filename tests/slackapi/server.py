"""A local server speaking Slack's Web API wire contract, for tests and the demo.

Slack cannot be reached from here, so this is the only Slack Switchboard meets. It
follows Slack's documented contract for the methods Switchboard calls:

* ``POST``/``GET`` to ``/api/<method>`` with arguments as a query string, a
  form-encoded body, or a JSON body (JSON only with the token in the
  ``Authorization: Bearer`` header, as Slack requires);
* HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``;
  ``missing_scope`` carries ``needed`` and ``provided``; every answer carries
  ``X-OAuth-Scopes`` and ``X-Accepted-OAuth-Scopes`` headers;
* Slack's documented rate limits (``limits.py``: method tiers per workspace,
  ``chat.postMessage`` about one a second per channel with short bursts), answered with
  HTTP 429, ``ratelimited`` and ``Retry-After``; a test may also arm a 429 outright;
* the external upload pair: ``files.getUploadURLExternal`` gives an upload URL,
  the bytes are POSTed there, ``files.completeUploadExternal`` shares them.

Tests drive and read it through ``/_test/...`` control endpoints (see ``SlackControl``),
so it works the same in-process and as a separate process
(``python -m tests.slackapi --port 18080``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.slackapi.apps import AppCredentials, OAuth, SocketHub
from tests.slackapi.limits import Limits

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT = 40000
TRIGGER_TTL = 3.0  # seconds; Slack's trigger_id expires after 3 s

# The scope each method needs from a bot token (Slack's method reference).
SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.update": "chat:write",
    "conversations.open": "im:write",
    "conversations.members": "channels:read",
    "conversations.info": "channels:read",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "users.info": "users:read",
    "users.lookupByEmail": "users:read.email",
    "users.getPresence": "users:read",
    "views.open": None,
    "views.update": None,
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "apps.connections.open": "connections:write",  # an app-level token's scope
    "oauth.v2.access": None,  # the app's client id and secret, no token
}
APP_METHODS = {"apps.connections.open", "oauth.v2.access"}

ALL_SCOPES = ("chat:write", "im:write", "users:read", "users:read.email", "files:write",
              "commands", "channels:read", "channels:history", "groups:read",
              "groups:history", "im:history")


@dataclass
class User:
    id: str
    name: str
    real_name: str
    email: str
    presence: str = "active"
    is_bot: bool = False
    deleted: bool = False
    is_admin: bool = False  # a workspace admin (users.info reports it, with is_owner)
    is_owner: bool = False


@dataclass
class Channel:
    id: str
    name: str
    is_im: bool = False
    members: list[str] = field(default_factory=list)
    bot_is_member: bool = True


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    edited: bool = False
    ephemeral_to: str | None = None
    metadata: dict[str, Any] | None = None
    received_at: float = field(default_factory=time.time)  # for latency measurements


class SlackApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Workspace:
    team_id: str = "T0SWITCH1"
    team_name: str = "Switchboard Test"
    domain: str = "switchboard-test"
    bot_token: str = "xoxb-test-switchboard-token"
    bot_user_id: str = "U0BOTUSER1"
    bot_id: str = "B0BOTID01"
    scopes: tuple[str, ...] = ALL_SCOPES


class SlackState:
    """Everything the fake workspace holds; tests read it through the control API."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace()
        self._counter = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        ws = self.workspace
        self.users: dict[str, User] = {
            ws.bot_user_id: User(ws.bot_user_id, "switchboard", "Switchboard", "", is_bot=True),
        }
        self.channels: dict[str, Channel] = {}
        self.messages: list[Message] = []
        self.views: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.triggers: dict[str, float] = {}
        self.responses: list[dict[str, Any]] = []  # bodies POSTed to response_urls
        self.rate_limits: dict[str, list[float]] = {}  # method -> [times left, retry after]
        self.failures: dict[str, list[int]] = {}  # method -> [times left, HTTP status]
        # method -> [times left, seconds, after]: answer that late (after acting, if after)
        self.slow: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.scopes = list(ws.scopes)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._counter):08d}"

    def new_ts(self) -> str:
        # Unique and increasing, like Slack's message timestamps.
        return f"{int(time.time())}.{next(self._counter):06d}"

    def find_message(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts
                     and m.ephemeral_to is None), None)

    def user_json(self, user: User) -> dict[str, Any]:
        return {
            "id": user.id, "team_id": self.workspace.team_id, "name": user.name,
            "real_name": user.real_name, "deleted": user.deleted, "is_bot": user.is_bot,
            "is_admin": user.is_admin or user.is_owner, "is_owner": user.is_owner,
            "is_primary_owner": False, "is_restricted": False,
            "is_ultra_restricted": False,
            "tz": "Europe/London",
            "profile": {"real_name": user.real_name, "display_name": user.name,
                        "email": user.email, "team": self.workspace.team_id},
        }


# The methods that read a JSON body (Slack's method reference: "Content types"); the
# others read form fields and query parameters only.
JSON_METHODS = {"chat.postMessage", "chat.postEphemeral", "chat.update", "conversations.open",
                "views.open", "views.update", "auth.test", "files.completeUploadExternal"}


def _args(request: web.Request, body: bytes,
          json_allowed: bool = True) -> tuple[dict[str, Any], str | None]:
    """The method's arguments and the token, from wherever Slack accepts them."""
    args: dict[str, Any] = dict(request.query)
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer "):] if header.startswith("Bearer ") else None
    ctype = request.content_type
    if body and ctype == "application/json":
        if token is None:
            # Slack: JSON bodies must carry the token in the Authorization header.
            raise SlackApiError("not_authed")
        try:
            data = json.loads(body)
        except ValueError:
            raise SlackApiError("invalid_json") from None
        if not isinstance(data, dict):
            raise SlackApiError("json_not_object")
        if json_allowed:
            args.update(data)
    elif body and ctype == "application/x-www-form-urlencoded":
        args.update(dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
    elif body and ctype.startswith("multipart/"):
        raise SlackApiError("invalid_form_data")
    token = token or args.pop("token", None)
    args.pop("token", None)
    return args, token


def _json_arg(args: dict[str, Any], name: str) -> Any:
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiError(f"invalid_{name}") from None
    return value


def _check_blocks(blocks: Any) -> list[dict[str, Any]]:
    if blocks is None:
        return []
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        raise SlackApiError("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or "type" not in block:
            raise SlackApiError("invalid_blocks")
        text = block.get("text")
        if isinstance(text, dict) and len(text.get("text", "")) > MAX_SECTION_TEXT:
            raise SlackApiError("invalid_blocks")
        for element in block.get("elements", []):
            if element.get("type") == "button" and len(element.get("action_id", "")) > 255:
                raise SlackApiError("invalid_blocks")
    return blocks


def _require(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if value in (None, ""):
        raise SlackApiError("invalid_arguments", response_metadata={
            "messages": [f"[ERROR] missing required field: {name}"]})
    return str(value)


class Methods:
    def __init__(self, state: SlackState, base_url: str) -> None:
        self.s = state
        self.base_url = base_url

    def _channel(self, channel_id: str) -> Channel:
        channel = self.s.channels.get(channel_id)
        if channel is None:
            raise SlackApiError("channel_not_found")
        return channel

    def _user(self, user_id: str) -> User:
        user = self.s.users.get(user_id)
        if user is None:
            raise SlackApiError("user_not_found")
        return user

    def auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        ws = self.s.workspace
        return {"url": f"https://{ws.domain}.slack.com/", "team": ws.team_name,
                "user": "switchboard", "team_id": ws.team_id, "user_id": ws.bot_user_id,
                "bot_id": ws.bot_id, "is_enterprise_install": False}

    def _post(self, args: dict[str, Any], ephemeral_to: str | None = None) -> Message:
        channel = self._channel(_require(args, "channel"))
        if not channel.is_im and not channel.bot_is_member:
            raise SlackApiError("not_in_channel")
        blocks = _check_blocks(_json_arg(args, "blocks"))
        text = str(args.get("text") or "")
        if not text and not blocks and not args.get("attachments"):
            raise SlackApiError("no_text")
        thread_ts = args.get("thread_ts") or None
        if thread_ts and self.s.find_message(channel.id, str(thread_ts)) is None:
            raise SlackApiError("thread_not_found")
        metadata = _json_arg(args, "metadata")
        bot = self.s.workspace.bot_user_id
        message = Message(channel.id, self.s.new_ts(), text[:MAX_TEXT], bot, blocks,
                          str(thread_ts) if thread_ts else None,
                          ephemeral_to=ephemeral_to, metadata=metadata)
        self.s.messages.append(message)
        return message

    def chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        m = self._post(args)
        return {"channel": m.channel, "ts": m.ts,
                "message": {"type": "message", "subtype": "bot_message", "text": m.text,
                            "ts": m.ts, "user": m.user, "bot_id": self.s.workspace.bot_id,
                            "blocks": m.blocks, **({"thread_ts": m.thread_ts} if m.thread_ts
                                                   else {})}}

    def chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        user = _require(args, "user")
        channel = self._channel(_require(args, "channel"))
        if not channel.is_im and user not in channel.members:
            raise SlackApiError("user_not_in_channel")
        m = self._post(args, ephemeral_to=user)
        return {"message_ts": m.ts}

    def chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_require(args, "channel"))
        message = self.s.find_message(channel.id, _require(args, "ts"))
        if message is None:
            raise SlackApiError("message_not_found")
        if message.user != self.s.workspace.bot_user_id:
            raise SlackApiError("cant_update_message")
        if "blocks" in args:
            message.blocks = _check_blocks(_json_arg(args, "blocks"))
        if "text" in args:
            message.text = str(args["text"])[:MAX_TEXT]
        message.edited = True
        return {"channel": channel.id, "ts": message.ts, "text": message.text,
                "message": {"text": message.text, "blocks": message.blocks}}

    def conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u.strip() for u in str(args.get("users", "")).split(",") if u.strip()]
        if not users:
            raise SlackApiError("users_list_not_supplied")
        for user_id in users:
            if self._user(user_id).deleted:
                raise SlackApiError("user_disabled")
        members = sorted(set(users))
        existing = next((c for c in self.s.channels.values() if c.is_im and c.members == members),
                        None)
        channel = existing or Channel(self.s.new_id("D"), "", is_im=True, members=members)
        self.s.channels[channel.id] = channel
        answer: dict[str, Any] = {"channel": {"id": channel.id}}
        if existing:
            answer.update(no_op=True, already_open=True)
        return answer

    def conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """A conversation's object; ``is_member`` says whether the caller (the bot) is in it."""
        channel = self._channel(_require(args, "channel"))
        return {"channel": {"id": channel.id, "name": channel.name, "is_channel": not channel.is_im,
                            "is_im": channel.is_im, "is_private": False,
                            "is_archived": False, "is_member": channel.is_im
                            or channel.bot_is_member, "created": 1700000000}}

    def conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        """Members of a channel, paged with an opaque cursor (limit default 100, 1000 at
        most), as Slack's conversations.members answers."""
        channel = self._channel(_require(args, "channel"))
        limit = min(int(args.get("limit") or 100), 1000)
        cursor = str(args.get("cursor") or "")
        try:
            start = int(cursor.removeprefix("m:")) if cursor else 0
        except ValueError:
            raise SlackApiError("invalid_cursor") from None
        members = channel.members[start:start + limit]
        following = start + limit
        more = f"m:{following}" if following < len(channel.members) else ""
        return {"members": members, "response_metadata": {"next_cursor": more}}

    def _message_json(self, m: Message, metadata: bool) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "message", "ts": m.ts, "user": m.user,
                                 "text": m.text, "blocks": m.blocks}
        if m.user == self.s.workspace.bot_user_id:
            found.update(subtype="bot_message", bot_id=self.s.workspace.bot_id)
        if m.thread_ts:
            found["thread_ts"] = m.thread_ts
        if m.files:
            found["files"] = m.files
        if metadata and m.metadata:
            found["metadata"] = m.metadata
        return found

    def _page(self, messages: list[Message], args: dict[str, Any], default: int,
              metadata: bool) -> dict[str, Any]:
        limit = max(1, min(int(args.get("limit") or default), 999))
        cursor = str(args.get("cursor") or "")
        try:
            start = int(cursor.removeprefix("h:")) if cursor else 0
        except ValueError:
            raise SlackApiError("invalid_cursor") from None
        page = messages[start:start + limit]
        more = start + limit < len(messages)
        return {"messages": [self._message_json(m, metadata) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": f"h:{start + limit}" if more else ""}}

    @staticmethod
    def _in_window(m: Message, args: dict[str, Any]) -> bool:
        inclusive = str(args.get("inclusive", "")).lower() in ("1", "true")
        ts = float(m.ts)
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or 9e12)
        if inclusive:
            return oldest <= ts <= latest
        return oldest < ts < latest

    def conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """A channel's top-level messages (and thread broadcasts), newest first; thread
        replies are only in conversations.replies, as on Slack."""
        channel = self._channel(_require(args, "channel"))
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in self.s.messages if m.channel == channel.id and not m.ephemeral_to
                 and (not m.thread_ts or m.thread_ts == m.ts) and self._in_window(m, args)]
        return self._page(sorted(found, key=lambda m: float(m.ts), reverse=True), args, 100,
                          metadata)

    def conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies oldest first."""
        channel = self._channel(_require(args, "channel"))
        ts = _require(args, "ts")
        parent = self.s.find_message(channel.id, ts)
        if parent is None:
            raise SlackApiError("thread_not_found")
        root = parent.thread_ts or parent.ts
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in self.s.messages if m.channel == channel.id and not m.ephemeral_to
                 and (m.ts == root or m.thread_ts == root) and self._in_window(m, args)]
        return self._page(sorted(found, key=lambda m: float(m.ts)), args, 1000, metadata)

    def users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"user": self.s.user_json(self._user(_require(args, "user")))}

    def users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        email = _require(args, "email").lower()
        user = next((u for u in self.s.users.values() if u.email.lower() == email and u.email),
                    None)
        if user is None:
            raise SlackApiError("users_not_found")
        return {"user": self.s.user_json(user)}

    def users_getPresence(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user") or self.s.workspace.bot_user_id
        return {"presence": self._user(str(user_id)).presence}

    def _take_trigger(self, args: dict[str, Any]) -> None:
        trigger = _require(args, "trigger_id")
        issued = self.s.triggers.pop(trigger, None)
        if issued is None:
            raise SlackApiError("invalid_trigger_id")
        if time.time() - issued > TRIGGER_TTL:
            raise SlackApiError("expired_trigger_id")

    def _view(self, args: dict[str, Any], view_id: str | None = None) -> dict[str, Any]:
        view = _json_arg(args, "view")
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
            raise SlackApiError("invalid_arguments")
        title = view.get("title", {}).get("text", "")
        if view.get("type") == "modal" and not (0 < len(title) <= 24):
            raise SlackApiError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"]})
        if len(view.get("blocks", [])) > 100:
            raise SlackApiError("invalid_arguments")
        stored = {**view, "id": view_id or self.s.new_id("V"), "team_id": self.s.workspace.team_id,
                  "hash": secrets.token_hex(6)}
        self.s.views = [v for v in self.s.views if v["id"] != stored["id"]] + [stored]
        return {"view": stored}

    def views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        self._take_trigger(args)
        return self._view(args)

    def views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = _require(args, "view_id")
        if not any(v["id"] == view_id for v in self.s.views):
            raise SlackApiError("not_found")
        return self._view(args, view_id)

    def files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _require(args, "filename")
        try:
            length = int(_require(args, "length"))
        except ValueError:
            raise SlackApiError("invalid_arguments") from None
        file_id = self.s.new_id("F")
        self.s.files[file_id] = {"id": file_id, "name": filename, "title": filename,
                                 "length": length, "content": None, "shared": False,
                                 "alt_txt": args.get("alt_txt", "")}
        return {"upload_url": f"{self.base_url}/_upload/{file_id}", "file_id": file_id}

    def files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = _json_arg(args, "files")
        if not isinstance(entries, list) or not entries:
            raise SlackApiError("invalid_arguments")
        channel_id = args.get("channel_id")
        channel = self._channel(str(channel_id)) if channel_id else None
        shared = []
        for entry in entries:
            record = self.s.files.get(str(entry.get("id")))
            if record is None or record["content"] is None:
                raise SlackApiError("file_not_found")
            if len(record["content"]) != record["length"]:
                raise SlackApiError("file_upload_size_mismatch")
            record["title"] = entry.get("title") or record["name"]
            record["shared"] = channel is not None
            shared.append({"id": record["id"], "title": record["title"], "name": record["name"],
                           "size": record["length"]})
        if channel is not None:
            thread_ts = args.get("thread_ts") or None
            self.s.messages.append(Message(
                channel.id, self.s.new_ts(), str(args.get("initial_comment") or ""),
                self.s.workspace.bot_user_id, thread_ts=str(thread_ts) if thread_ts else None,
                files=shared))
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shared]}


class SlackServer:
    """The aiohttp application; ``start`` binds it to 127.0.0.1.

    It holds one workspace from the start (its bot token given, as if installed) and
    any number more that tests add; those get a bot token by installing the app through
    the OAuth flow. The ``/_test`` controls act on the workspace named by ``?team=``,
    else on the first."""

    def __init__(self, state: SlackState | None = None) -> None:
        self.state = state or SlackState()
        self.states: dict[str, SlackState] = {self.state.workspace.team_id: self.state}
        self.revoked: set[str] = set()
        self._first_token = self.state.workspace.bot_token
        self.credentials = AppCredentials()
        self.hub = SocketHub(self.credentials)
        self.oauth = OAuth(self.credentials)
        self.limits = Limits()
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/api/{method}", self._api)
        self.app.router.add_post("/_upload/{file_id}", self._upload)
        self.app.router.add_post("/_response/{team}/{id}", self._response_url)
        self.app.router.add_get("/link/", self.hub.serve)
        self.app.router.add_get("/oauth/v2/authorize", self._authorize)
        self.app.router.add_get("/_test/state", self._read_state)
        self.app.router.add_get("/_test/count", self._count)
        self.app.router.add_get("/_test/socket", self._socket_state)
        self.app.router.add_post("/_test/{action}", self._control)

    def _state_for(self, request: web.Request) -> SlackState:
        team = request.query.get("team")
        if team and team not in self.states:
            raise web.HTTPNotFound(text=f"no workspace {team}")
        return self.states[team] if team else self.state

    def _by_token(self, token: str) -> SlackState | None:
        return next((s for s in self.states.values() if token and s.workspace.bot_token == token),
                    None)

    async def _authorize(self, request: web.Request) -> web.Response:
        return self.oauth.authorize(dict(request.query), set(self.states),
                                    self.state.workspace.team_id)

    def _app_method(self, name: str, request: web.Request, body: bytes) -> dict[str, Any]:
        """The methods called with the app's own credentials rather than a bot token."""
        if name == "apps.connections.open":
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                raise SlackApiError("not_authed")  # the token only goes in the header
            token = header[len("Bearer "):]
            if token.startswith("xoxb-"):
                raise SlackApiError("not_allowed_token_type")
            if token != self.credentials.app_token:
                raise SlackApiError("invalid_auth")
            return {"url": self.hub.new_url(self.base_url)}
        args, _ = _args(request, body)
        try:
            grant = self.oauth.exchange(args, request.headers.get("Authorization", ""))
        except ValueError as exc:
            raise SlackApiError(str(exc)) from None
        state = self.states[grant.team]
        ws = state.workspace
        ws.bot_token = f"xoxb-{ws.team_id.lower()}-{secrets.token_hex(12)}"
        state.scopes = list(grant.scopes)
        return {"access_token": ws.bot_token, "token_type": "bot",
                "scope": ",".join(grant.scopes), "bot_user_id": ws.bot_user_id,
                "app_id": self.credentials.app_id,
                "team": {"name": ws.team_name, "id": ws.team_id}, "enterprise": None,
                "authed_user": {"id": grant.user}, "is_enterprise_install": False}

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{bound}"
        return self.base_url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _answer(self, payload: dict[str, Any], status: int = 200,
                headers: dict[str, str] | None = None, accepted: str = "",
                state: SlackState | None = None) -> web.Response:
        hdrs = {"X-OAuth-Scopes": ",".join((state or self.state).scopes),
                "X-Accepted-OAuth-Scopes": accepted, **(headers or {})}
        return web.json_response(payload, status=status, headers=hdrs)

    async def _api(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        body = await request.read()
        needed = SCOPES.get(name)
        if name in APP_METHODS:
            try:
                return self._answer({"ok": True, **self._app_method(name, request, body)})
            except SlackApiError as exc:
                return self._answer({"ok": False, "error": exc.error})
        header = request.headers.get("Authorization", "")
        given = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        state = self._by_token(given) or self._by_token(
            str(dict(parse_qsl(body.decode("utf-8", "replace"))).get("token", ""))) \
            or self.state
        handler = getattr(Methods(state, self.base_url), name.replace(".", "_"), None)
        if handler is None or name not in SCOPES:
            return self._answer({"ok": False, "error": "unknown_method"}, status=404)
        limit = state.rate_limits.get(name)
        if limit and limit[0] > 0:
            limit[0] -= 1
            return self._answer({"ok": False, "error": "ratelimited"}, status=429,
                                headers={"Retry-After": str(int(limit[1]))})
        slow = state.slow.get(name)
        delay_after = 0.0
        if slow and slow[0] > 0:
            slow[0] -= 1
            if slow[2]:
                delay_after = slow[1]
            else:
                await asyncio.sleep(slow[1])
                if request.transport is None or request.transport.is_closing():
                    # The caller gave up (or died) while it waited: nothing is done.
                    return web.Response(status=499, text="client closed the request")
        failure = state.failures.get(name)
        if failure and failure[0] > 0:
            failure[0] -= 1
            return web.Response(status=failure[1], text="upstream connect error")
        try:
            args, token = _args(request, body, json_allowed=name in JSON_METHODS)
            if not token:
                raise SlackApiError("not_authed")
            if token in self.revoked:
                raise SlackApiError("token_revoked")
            if token != state.workspace.bot_token:
                raise SlackApiError("invalid_auth")
            if needed and needed not in state.scopes:
                raise SlackApiError("missing_scope", needed=needed,
                                    provided=",".join(state.scopes))
            retry_after = self.limits.retry_after(state.workspace.team_id, name,
                                                  str(args.get("channel") or ""))
            if retry_after:
                return self._answer({"ok": False, "error": "ratelimited"}, status=429,
                                    headers={"Retry-After": str(retry_after)}, state=state)
            state.calls.append((name, args))
            result = handler(args)
        except SlackApiError as exc:
            return self._answer({"ok": False, "error": exc.error, **exc.extra},
                                accepted=needed or "", state=state)
        if delay_after:
            # Done, but the answer is late: the window in which a client can die after
            # Slack acted and before it heard so.
            await asyncio.sleep(delay_after)
        return self._answer({"ok": True, **result}, accepted=needed or "", state=state)

    async def _upload(self, request: web.Request) -> web.Response:
        record = next((s.files[request.match_info["file_id"]] for s in self.states.values()
                       if request.match_info["file_id"] in s.files), None)
        if record is None:
            return web.Response(status=404, text="not found")
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            content = b""
            async for part in reader:
                if getattr(part, "name", None) in ("file", "filename"):
                    content = await part.read()  # type: ignore[union-attr]
        else:
            content = await request.read()
        record["content"] = bytes(content)
        return web.Response(text=f"OK - {len(content)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        state = self.states.get(request.match_info["team"], self.state)
        state.responses.append({"id": request.match_info["id"], **(await request.json())})
        return web.Response(text="ok")

    async def _count(self, request: web.Request) -> web.Response:
        """How many messages a channel holds: cheap enough to poll (the benchmarks)."""
        channel = request.query.get("channel")
        return web.json_response({"messages": sum(
            1 for m in self._state_for(request).messages
            if channel is None or m.channel == channel)})

    async def _socket_state(self, request: web.Request) -> web.Response:
        return web.json_response({"connections": len([s for s in self.hub.sockets
                                                      if not s.closed]),
                                  "delivered": self.hub.delivered,
                                  "unacked": sorted(self.hub.unacked)})

    async def _read_state(self, request: web.Request) -> web.Response:
        s = self._state_for(request)
        return web.json_response({
            "messages": [asdict(m) for m in s.messages],
            "views": s.views,
            "responses": s.responses,
            "channels": [asdict(c) for c in s.channels.values()],
            "users": [asdict(u) for u in s.users.values()],
            "files": [{k: v for k, v in f.items() if k != "content"}
                      | {"size": len(f["content"] or b"")} for f in s.files.values()],
            "calls": [[name, args] for name, args in s.calls],
            "workspace": asdict(s.workspace),
            # What is left of injected faults: {method: [times left, status or retry-after]}.
            "failures": s.failures,
            "rate_limits": s.rate_limits,
            # Answers of 429 from the documented limits: [method, channel, when].
            "throttled": [list(t) for t in self.limits.throttled],
            "slow": s.slow,  # {method: [times left, seconds, after]}: 0 left = under way
        })

    async def _control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        data = await request.json() if request.can_read_body else {}
        s = self._state_for(request)
        if action == "reset":
            s.reset()
            if s is self.state:  # the whole server, as it started
                self.states = {s.workspace.team_id: s}
                s.workspace.bot_token = self._first_token
                self.revoked.clear()
                self.limits.reset()
                self.limits.on = True
                self.hub.reset()
                self.oauth.grants.clear()
        elif action == "workspace":
            ws = Workspace(team_id=data["team_id"], team_name=data["team_name"],
                           domain=data.get("domain", data["team_id"].lower()), bot_token="",
                           bot_user_id=data.get("bot_user_id", "U0BOT" + data["team_id"][-5:]))
            self.states[ws.team_id] = SlackState(ws)
        elif action == "limits":
            self.limits.on = bool(data["on"])
            self.limits.reset()
        elif action == "uninstall":
            # The app removed from the workspace: its token stops working at once.
            self.revoked.add(s.workspace.bot_token)
            s.workspace.bot_token = ""
        elif action == "envelope":
            acked, payload = await self.hub.deliver(data["type"], data["payload"],
                                                    float(data.get("wait", 10)))
            return web.json_response({"acked": acked, "payload": payload})
        elif action == "socket_disconnect":
            closed = await self.hub.disconnect(data.get("reason", "refresh_requested"),
                                               data.get("close_after"))
            return web.json_response({"ok": True, "connections": closed})
        elif action == "lose_acks":
            self.hub.lose_acks = int(data["count"])
        elif action == "user":
            user = User(**data)
            s.users[user.id] = user
        elif action == "channel":
            channel = Channel(**data)
            s.channels[channel.id] = channel
        elif action == "presence":
            s.users[data["user"]].presence = data["presence"]
        elif action == "ratelimit":
            s.rate_limits[data["method"]] = [data.get("times", 1), data.get("retry_after", 1)]
        elif action == "fail":
            s.failures[data["method"]] = [data.get("times", 1), data.get("status", 500)]
        elif action == "message":
            message = Message(data["channel"], s.new_ts(), data["text"], data["user"],
                              thread_ts=data.get("thread_ts"))
            s.messages.append(message)
            return web.json_response({"type": "message", "ts": message.ts,
                                      "user": message.user, "text": message.text,
                                      **({"thread_ts": message.thread_ts}
                                         if message.thread_ts else {})})
        elif action == "slow":
            s.slow[data["method"]] = [data.get("times", 1), float(data["seconds"]),
                                      bool(data.get("after", False))]
        elif action == "scopes":
            s.scopes = list(data["scopes"])
        elif action == "trigger":
            trigger = f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
            s.triggers[trigger] = time.time()
            return web.json_response({"trigger_id": trigger})
        elif action == "response_url":
            return web.json_response(
                {"response_url": f"{self.base_url}/_response/{s.workspace.team_id}/"
                                 f"{secrets.token_hex(8)}"})
        elif action == "file":
            record = s.files.get(data["id"])
            content = (record or {}).get("content") or b""
            return web.Response(body=content)
        else:
            return web.json_response({"error": f"unknown control {action}"}, status=404)
        return web.json_response({"ok": True})
