"""OAuth2 login to mailboxes (SASL XOAUTH2 or OAUTHBEARER), for providers that turned off
passwords: Microsoft 365 and Google Workspace.

An access token comes from the token endpoint by the refresh-token grant (a mailbox
owner authorized Switchboard once) or the client-credentials grant (app-only access, as
Microsoft 365 offers it). It is kept until a minute before it expires, refreshed at once
when a server refuses it, and never written to a log: the ``scrub`` of each exchange keeps
tokens out of error texts."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import aiohttp

from bot.settings import OAuth2Settings, Settings
from bridges.email.connect import tls_context
from bridges.errors import MailError

log = logging.getLogger(__name__)

EARLY = 60.0  # seconds before expiry that a token is renewed
DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (expires_in is RECOMMENDED)


class OAuthError(MailError):
    """A token could not be had; the message says why and what to do."""


class OAuthLogin:
    def __init__(self, cfg: OAuth2Settings, ca_file: str | None = None) -> None:
        self.cfg = cfg
        self.ca_file = ca_file
        self._token = ""
        self._expires = 0.0
        self._refresh_token = cfg.refresh_token
        self._lock = asyncio.Lock()
        self.refreshed = 0  # how many tokens were fetched (doctor, tests)

    @property
    def describe(self) -> str:
        return f"OAuth2 {self.cfg.mechanism.upper()} ({self.cfg.grant} grant)"

    async def token(self, *, fresh: bool = False) -> str:
        """A valid access token; ``fresh``: a new one even if the kept one has not
        expired (a server has just refused it)."""
        async with self._lock:
            if fresh or not self._token or time.time() > self._expires - EARLY:
                await self._fetch()
            return self._token

    def initial_response(self, user: str, token: str) -> str:
        """The SASL initial response, base64: XOAUTH2's, or OAUTHBEARER's (RFC 7628)."""
        if self.cfg.mechanism == "oauthbearer":
            raw = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
        else:
            raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
        return base64.b64encode(raw.encode()).decode("ascii")

    async def _fetch(self) -> None:
        cfg = self.cfg
        form = {"grant_type": cfg.grant, "client_id": cfg.client_id}
        if cfg.client_secret:
            form["client_secret"] = cfg.client_secret
        if cfg.scope:
            form["scope"] = cfg.scope
        if self._refresh_token:
            form["refresh_token"] = self._refresh_token
        ssl = tls_context(self.ca_file) if cfg.token_url.startswith("https://") else True
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
                    http.post(cfg.token_url, data=form, ssl=ssl) as answer:
                body: dict[str, Any] = await answer.json(content_type=None)
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise OAuthError(f"the OAuth2 token endpoint {cfg.token_url} could not be asked "
                             f"({type(exc).__name__}); mail login waits for it",
                             transient=True) from None
        if status >= 500 or status == 429:
            raise OAuthError(f"the OAuth2 token endpoint answered {status}; trying again "
                             "later", transient=True)
        token = body.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            raise OAuthError(_refusal(str(body.get("error") or status),
                                      str(body.get("error_description") or "")),
                             transient=False)
        self._token = token
        self._expires = time.time() + float(body.get("expires_in") or DEFAULT_LIFETIME)
        if isinstance(body.get("refresh_token"), str):
            self._refresh_token = body["refresh_token"]  # rotated by the provider
        self.refreshed += 1
        log.info("OAuth2 access token obtained (%s grant), good for %d s", cfg.grant,
                 int(self._expires - time.time()))


def oauth_login(settings: Settings) -> OAuthLogin | None:
    """The OAuth2 login the settings ask for, shared by IMAP and SMTP (one token)."""
    return OAuthLogin(settings.oauth2, settings.tls_ca_file) if settings.oauth2 else None


def _refusal(error: str, description: str) -> str:
    fixes = {
        "invalid_grant": "the refresh token was revoked or has expired: the mailbox owner "
                         "must authorize Switchboard again, then set "
                         "SWITCHBOARD_OAUTH2_REFRESH_TOKEN to the new one",
        "invalid_client": "the client id or secret is wrong or expired: check "
                          "SWITCHBOARD_OAUTH2_CLIENT_ID and SWITCHBOARD_OAUTH2_CLIENT_SECRET",
        "unauthorized_client": "the app may not use this grant: allow it in the provider's "
                               "app registration",
        "invalid_scope": "a scope is not granted to the app: check SWITCHBOARD_OAUTH2_SCOPE",
    }
    reason = f"the OAuth2 token endpoint refused ({error}"
    reason += f": {description[:200]})" if description else ")"
    return f"{reason}; {fixes.get(error, 'check the SWITCHBOARD_OAUTH2_* settings')}"
