"""OAuth2 login to mailboxes (SASL XOAUTH2 or OAUTHBEARER), for providers that turned off
passwords: Microsoft 365 and Google Workspace.

An access token comes from the token endpoint by the refresh-token grant (a mailbox
owner authorized Switchboard once) or the client-credentials grant (app-only access, as
Microsoft 365 offers it). It is kept until a minute before it expires, refreshed at once
when a server refuses it, and never written to a log: the ``scrub`` of each exchange keeps
tokens out of error texts. Providers may rotate the refresh token on every use (the old
one is then spent): the newest is kept in the store, sealed, for every process and for
the next start."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

import aiohttp
from Crypto.Cipher import AES

from bot.errors import StoreError
from bot.settings import OAuth2Settings, Settings
from bot.settings_mailboxes import MailboxSettings
from bot.stores import LoginStore
from bridges.email.connect import tls_context
from bridges.errors import MailError

log = logging.getLogger(__name__)

EARLY = 60.0  # seconds before expiry that a token is renewed
DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (expires_in is RECOMMENDED)


class OAuthError(MailError):
    """A token could not be had; the message says why and what to do."""


LOCK_TTL = 30.0  # seconds one process may take over a fetch before another may try
LOCK_WAIT = 25.0  # seconds a process waits for another's fetch before giving up for now
SPENT_KEPT = 20  # fingerprints of rotated-away refresh tokens remembered


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Sealed:
    """The login's tokens as the store keeps them: AES-GCM under a key derived from the
    configured secrets (client id and secret, configured refresh token). Whoever reads
    Redis alone cannot use them; a configuration with a new refresh token (the owner
    authorized Switchboard again) cannot open the old record and starts from its own."""

    def __init__(self, cfg: OAuth2Settings) -> None:
        material = "\x00".join(("switchboard oauth2 login", cfg.client_id,
                                cfg.client_secret or "", cfg.refresh_token or ""))
        self._key = hashlib.sha256(material.encode()).digest()

    def seal(self, fields: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        body, tag = cipher.encrypt_and_digest(json.dumps(fields).encode())
        return base64.b64encode(nonce + tag + body).decode("ascii")

    def open(self, sealed: str) -> dict[str, Any] | None:
        try:
            raw = base64.b64decode(sealed)
            cipher = AES.new(self._key, AES.MODE_GCM, nonce=raw[:12])
            found = json.loads(cipher.decrypt_and_verify(raw[28:], raw[12:28]))
        except (ValueError, KeyError, TypeError):
            return None
        return found if isinstance(found, dict) else None


class OAuthLogin:
    """One mailbox's OAuth2 login, shared by its IMAP and SMTP links and, through the
    store, by every process and by `doctor`: one token at a time, fetched by one process
    under a lock in the store, the newest refresh token kept there (sealed)."""

    def __init__(self, cfg: OAuth2Settings, ca_file: str | None = None,
                 store: LoginStore | None = None, account: str = "") -> None:
        self.cfg = cfg
        self.ca_file = ca_file
        self.store = store
        # A mailbox of the [[mailboxes]] tables keeps its own token (``account``), even
        # where another mailbox uses the same client: their refresh tokens differ.
        self.name = _fingerprint("|".join((cfg.token_url, cfg.client_id, cfg.grant,
                                           cfg.scope or "", *((account,) if account else ()))))
        self._sealed = Sealed(cfg)
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._token = ""
        self._expires = 0.0
        self._refresh_token = cfg.refresh_token
        self._spent: list[list[Any]] = []  # [fingerprint, when it was replaced]
        self._lock = asyncio.Lock()
        self.refreshed = 0  # how many tokens this process fetched (doctor, tests)

    @property
    def describe(self) -> str:
        return f"OAuth2 {self.cfg.mechanism.upper()} ({self.cfg.grant} grant)"

    async def token(self, *, refused: str = "") -> str:
        """A valid access token; ``refused``: one a server has just refused, not to be
        given again (a newer one, another process's or this one's, or a new one)."""
        async with self._lock:
            if self._token != refused and self._usable(self._token, self._expires):
                return self._token
            if await self._adopt(refused):
                return self._token
            if self.store is None:
                await self._fetch()
                return self._token
            await self._take_lock()
            try:
                # Another process may have fetched while this one waited for the lock.
                if not await self._adopt(refused):
                    await self._fetch()
                    await self._keep()
            finally:
                with contextlib.suppress(StoreError):
                    await self.store.unlock(self.name, self._holder)
            return self._token

    @staticmethod
    def _usable(token: str, expires: float) -> bool:
        return bool(token) and time.time() < expires - EARLY

    async def _adopt(self, refused: str) -> bool:
        """Take up what the store holds: its refresh token always (it is the newest), its
        access token if it is valid and not the one just refused."""
        if self.store is None:
            return False
        try:
            found = await self.store.load(self.name)
        except StoreError as exc:
            log.warning("the OAuth2 login's shared tokens could not be read (%s); this "
                        "process goes on with its own", exc)
            return False
        opened = self._sealed.open(found.get("sealed", "")) if found else None
        if opened is None:
            return False
        self._refresh_token = str(opened.get("refresh_token") or "") or self._refresh_token
        known = {fp for fp, _ in self._spent}
        self._spent += [s for s in opened.get("spent") or [] if s[0] not in known]
        token, expires = str(opened.get("access_token") or ""), float(opened.get("expires", 0))
        if token == refused or not self._usable(token, expires):
            return False
        self._token, self._expires = token, expires
        return True

    async def _take_lock(self) -> None:
        assert self.store is not None
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                if await self.store.lock(self.name, self._holder, LOCK_TTL):
                    return
            except StoreError as exc:
                raise OAuthError(f"the OAuth2 login waits for the store ({exc})",
                                 transient=True) from None
            if time.monotonic() > deadline:
                raise OAuthError("another Switchboard process has been fetching the OAuth2 "
                                 f"token for over {LOCK_WAIT:.0f} s; trying again later",
                                 transient=True)
            await asyncio.sleep(0.1)

    async def _keep(self) -> None:
        assert self.store is not None
        sealed = self._sealed.seal({"access_token": self._token, "expires": self._expires,
                                    "refresh_token": self._refresh_token or "",
                                    "spent": self._spent[-SPENT_KEPT:]})
        try:
            await self.store.save(self.name, {"sealed": sealed, "saved": str(time.time())})
        except StoreError as exc:
            log.error("the new OAuth2 tokens could not be kept in the store (%s): a restart "
                      "now may have to authorize the mailbox again", exc)

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
        sent = self._refresh_token or ""
        if sent:
            form["refresh_token"] = sent
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
            error = str(body.get("error") or status)
            rotated = next((when for fp, when in self._spent if fp == _fingerprint(sent)), None)
            raise OAuthError(_refusal(error, str(body.get("error_description") or ""),
                                      rotated if error == "invalid_grant" else None),
                             transient=False)
        self._token = token
        self._expires = time.time() + float(body.get("expires_in") or DEFAULT_LIFETIME)
        new = body.get("refresh_token")
        if isinstance(new, str) and new and new != sent:
            # Rotated by the provider: the one sent is spent from now on.
            if sent:
                self._spent.append([_fingerprint(sent), time.time()])
            self._refresh_token = new
        self.refreshed += 1
        log.info("OAuth2 access token obtained (%s grant), good for %d s", cfg.grant,
                 int(self._expires - time.time()))


def oauth_login(settings: Settings, store: LoginStore | None = None) -> OAuthLogin | None:
    """The OAuth2 login the settings ask for, shared by IMAP and SMTP (one token), and
    with ``store`` by every process."""
    return OAuthLogin(settings.oauth2, settings.tls_ca_file, store) if settings.oauth2 \
        else None


def mailbox_login(settings: Settings, mailbox: MailboxSettings,
                  store: LoginStore | None = None) -> OAuthLogin | None:
    """The OAuth2 login of one mailbox of the [[mailboxes]] tables, its own."""
    return OAuthLogin(mailbox.oauth2, settings.tls_ca_file, store,
                      account=f"{mailbox.imap.user}@{mailbox.imap.host}") \
        if mailbox.oauth2 else None


def _refusal(error: str, description: str, rotated: float | None = None) -> str:
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
    fix = fixes.get(error, "check the SWITCHBOARD_OAUTH2_* settings")
    if rotated is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(rotated))
        fix = (f"the refresh token sent was rotated away: the provider replaced it with a "
               f"newer one at {when}, and that newer one has been used or lost since (another "
               "installation with the same login, or a store restored from an older copy): "
               "the mailbox owner must authorize Switchboard again, then set "
               "SWITCHBOARD_OAUTH2_REFRESH_TOKEN to the new one")
    reason = f"the OAuth2 token endpoint refused ({error}"
    reason += f": {description[:200]})" if description else ")"
    return f"{reason}; {fix}"
