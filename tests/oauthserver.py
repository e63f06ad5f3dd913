"""A local OAuth2 authorization server for the mail tests: the token endpoint (RFC 6749:
the refresh_token and client_credentials grants, errors as ``{"error": ...}``) and the
introspection endpoint (RFC 7662) the test Dovecot asks about every bearer token. Tests
steer it: issue a refresh token, expire every access token now, revoke a refresh token."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CLIENT_ID = "switchboard-test-client"
CLIENT_SECRET = "switchboard-test-secret"
LIFETIME = 3600


@dataclass
class Grant:
    username: str
    revoked: bool = False


@dataclass
class AuthServer:
    refresh: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> user, until
    app_user: str = ""  # whose mailbox the client_credentials grant reaches
    # Rotation (as Microsoft's and most providers' refresh tokens): every refresh answers
    # with a new refresh token and the one sent is spent (refused from then on).
    rotate: bool = False
    issued: int = 0
    introspected: int = 0
    _runner: web.AppRunner | None = None

    def refresh_token(self, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh[token] = Grant(username)
        return token

    def expire_all(self) -> None:
        self.access = {t: (u, 0.0) for t, (u, _) in self.access.items()}

    def revoke(self, refresh_token: str) -> None:
        self.refresh[refresh_token].revoked = True
        self.access = {t: v for t, v in self.access.items()
                       if v[0] != self.refresh[refresh_token].username}

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/introspect", self._introspect)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _error(error: str, status: int = 400) -> web.Response:
        return web.json_response({"error": error, "error_description": f"test: {error}"},
                                 status=status)

    async def _token(self, request: web.Request) -> web.Response:
        form: dict[str, Any] = dict(await request.post())
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            form.setdefault("client_id", client)
            form.setdefault("client_secret", secret)
        if form.get("client_id") != CLIENT_ID:
            return self._error("invalid_client", 401)
        grant = form.get("grant_type")
        if grant == "refresh_token":
            held = self.refresh.get(str(form.get("refresh_token")))
            if held is None or held.revoked:
                return self._error("invalid_grant")
            user = held.username
            if self.rotate:
                held.revoked = True
                rotated = self.refresh_token(user)
        elif grant == "client_credentials":
            if form.get("client_secret") != CLIENT_SECRET:
                return self._error("invalid_client", 401)
            user = self.app_user
        else:
            return self._error("unsupported_grant_type")
        token = "at-" + secrets.token_urlsafe(24)
        self.access[token] = (user, time.time() + LIFETIME)
        self.issued += 1
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME,
                  "scope": form.get("scope", "")}
        if grant == "refresh_token" and self.rotate:
            answer["refresh_token"] = rotated
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def _introspect(self, request: web.Request) -> web.Response:
        token = str((await request.post()).get("token", ""))
        self.introspected += 1
        held = self.access.get(token)
        if held is None or held[1] < time.time():
            return web.json_response({"active": False})
        return web.json_response({"active": True, "username": held[0], "exp": int(held[1]),
                                  "client_id": CLIENT_ID, "token_type": "Bearer"})
