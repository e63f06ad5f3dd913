"""The app-level side of the local Slack: the app's credentials, the OAuth v2 install
flow, and Socket Mode, each as Slack documents it.

* OAuth v2: ``/oauth/v2/authorize`` is the page where an admin approves the app for a
  workspace; approving redirects the browser to the app's ``redirect_uri`` with a
  one-time ``code`` (valid 10 minutes) and the app's ``state`` unchanged (denying
  redirects with ``error=access_denied``). ``oauth.v2.access`` exchanges the code, with
  the client id and secret (HTTP Basic auth or form fields) and the same ``redirect_uri``,
  for the workspace's bot token: ``access_token``, ``token_type: bot``, ``scope``,
  ``bot_user_id``, ``app_id``, ``team``, ``enterprise``, ``authed_user``,
  ``is_enterprise_install``. Errors: ``invalid_client_id``, ``bad_client_secret``,
  ``invalid_code``, ``code_already_used``, ``bad_redirect_uri``.
* Socket Mode: ``apps.connections.open`` with the app-level token (``xapp-``, in the
  Authorization header only) returns a one-time websocket URL. On connecting, Slack sends
  ``hello``; then envelopes ``{"envelope_id", "type": events_api|interactive|
  slash_commands, "payload", "accepts_response_payload", "retry_attempt",
  "retry_reason"}``, each acked by ``{"envelope_id", "payload"?}``. An envelope not
  acked is delivered again (``retry_attempt`` + 1) on the app's next connection. Slack
  sends ``{"type": "disconnect", "reason": "warning"|"refresh_requested"|...}`` before it
  closes a connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

CODE_TTL = 600.0


@dataclass
class AppCredentials:
    app_id: str = "A0SWITCHB1"
    client_id: str = "1111111111.2222222222"
    client_secret: str = "test-client-secret"
    app_token: str = "xapp-1-A0SWITCHB1-1-test-app-token"


@dataclass
class Grant:
    team: str
    redirect_uri: str
    scopes: list[str]
    user: str
    issued: float = field(default_factory=time.time)
    used: bool = False


@dataclass
class Envelope:
    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    retry_attempt: int = 0
    retry_reason: str = ""
    acked: asyncio.Future[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    sent_on: web.WebSocketResponse | None = None

    def message(self) -> str:
        return json.dumps({"envelope_id": self.envelope_id, "type": self.type,
                           "payload": self.payload,
                           "accepts_response_payload": self.accepts_response_payload,
                           "retry_attempt": self.retry_attempt,
                           "retry_reason": self.retry_reason})


class SocketHub:
    """Socket Mode connections of the app, and the envelopes sent over them."""

    def __init__(self, app: AppCredentials) -> None:
        self.app = app
        self.tickets: set[str] = set()
        self.sockets: list[web.WebSocketResponse] = []
        self.unacked: dict[str, Envelope] = {}
        self.delivered: list[dict[str, Any]] = []  # every send: id, attempt
        self.lose_acks = 0  # the next acks that "never arrive"; then the socket drops
        self.connected = asyncio.Event()

    def reset(self) -> None:
        self.unacked.clear()
        self.delivered.clear()
        self.lose_acks = 0

    def new_url(self, base_url: str) -> str:
        ticket = secrets.token_hex(16)
        self.tickets.add(ticket)
        host = base_url.removeprefix("http://")
        return f"ws://{host}/link/?ticket={ticket}&app_id={self.app.app_id}"

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self.tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self.tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": len(self.sockets),
            "debug_info": {"host": "applink-local", "build_number": 1,
                           "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app.app_id}}))
        self.connected.set()
        # What an earlier connection left unacked comes again, marked as a retry.
        for envelope in list(self.unacked.values()):
            if envelope.sent_on is None or envelope.sent_on.closed:
                envelope.retry_attempt += 1
                envelope.retry_reason = "timeout"
                await self._send(ws, envelope)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._ack(ws, msg.data)
        finally:
            self.sockets = [s for s in self.sockets if s is not ws]
            if not self.sockets:
                self.connected.clear()
        return ws

    async def _ack(self, ws: web.WebSocketResponse, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            return
        envelope = self.unacked.get(str(ack.get("envelope_id")))
        if envelope is None:
            return
        if self.lose_acks > 0:
            self.lose_acks -= 1
            if self.lose_acks == 0:
                await ws.close()  # the connection drops with those acks unheard
            return
        del self.unacked[envelope.envelope_id]
        if not envelope.acked.done():
            envelope.acked.set_result(ack.get("payload"))

    async def _send(self, ws: web.WebSocketResponse, envelope: Envelope) -> None:
        envelope.sent_on = ws
        self.delivered.append({"envelope_id": envelope.envelope_id,
                               "retry_attempt": envelope.retry_attempt})
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(envelope.message())

    async def deliver(self, kind: str, payload: dict[str, Any], wait: float
                      ) -> tuple[bool, dict[str, Any] | None]:
        """Send one envelope (waiting up to ``wait`` s for a connection) and wait for its
        ack: (acked, the ack's payload)."""
        envelope = Envelope(f"{secrets.token_hex(4)}-{secrets.token_hex(8)}", kind, payload,
                            accepts_response_payload=kind != "events_api")
        self.unacked[envelope.envelope_id] = envelope
        deadline = time.monotonic() + wait
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait)
        live = [s for s in self.sockets if not s.closed]
        if live:
            await self._send(live[secrets.randbelow(len(live))], envelope)
        try:
            answer = await asyncio.wait_for(asyncio.shield(envelope.acked),
                                            max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return False, None
        return True, answer

    async def disconnect(self, reason: str, close_after: float | None) -> int:
        live = [s for s in self.sockets if not s.closed]
        for ws in live:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({"type": "disconnect", "reason": reason,
                                              "debug_info": {"host": "applink-local"}}))
        if close_after is not None:
            await asyncio.sleep(close_after)
            for ws in live:
                await ws.close()
        return len(live)


class OAuth:
    """The install flow of the app, for the workspaces the server holds."""

    def __init__(self, app: AppCredentials) -> None:
        self.app = app
        self.grants: dict[str, Grant] = {}

    def authorize(self, query: dict[str, str], teams: set[str], default_team: str
                  ) -> web.Response:
        """The approval page, answered as the admin's click: ``team`` (a test's choice of
        the workspace the admin is signed in to) and ``deny`` steer it."""
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != self.app.client_id:
            return web.Response(status=400, text="invalid_client_id")
        if not redirect.startswith(("http://", "https://")):
            return web.Response(status=400, text="bad_redirect_uri")
        state = query.get("state", "")
        if query.get("deny"):
            target = f"{redirect}?{urlencode({'error': 'access_denied', 'state': state})}"
            raise web.HTTPFound(target)
        team = query.get("team") or default_team
        if team not in teams:
            return web.Response(status=400, text="unknown workspace")
        code = f"{int(time.time())}.{secrets.token_hex(20)}"
        scopes = [s for s in query.get("scope", "").split(",") if s]
        self.grants[code] = Grant(team, redirect, scopes, query.get("user") or "U0INSTALL1")
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, 'state': state})}")

    def exchange(self, args: dict[str, Any], authorization: str) -> Grant:
        """``oauth.v2.access``: the grant a code stands for; raises ValueError(error)."""
        client_id, client_secret = args.get("client_id"), args.get("client_secret")
        if authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != self.app.client_id:
            raise ValueError("invalid_client_id")
        if client_secret != self.app.client_secret:
            raise ValueError("bad_client_secret")
        grant = self.grants.get(str(args.get("code") or ""))
        if grant is None or time.time() - grant.issued > CODE_TTL:
            raise ValueError("invalid_code")
        if grant.used:
            raise ValueError("code_already_used")
        if args.get("redirect_uri") and args["redirect_uri"] != grant.redirect_uri:
            raise ValueError("bad_redirect_uri")
        grant.used = True
        return grant
