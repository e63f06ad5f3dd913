"""OAuth2 login to the mailbox, as Microsoft 365 and Google require: the test Dovecot
checks bearer tokens with a local authorization server (its own oauth2 passdb, RFC 7662
introspection), and the submission port authenticates through Dovecot the same way."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.bridge import Bridge, running_bridge
from tests.conftest import Services
from tests.integration.test_reply_by_email import received, reply_by_email_from_slack
from tests.integration.test_reply_in_chat import bob_told, email_card
from tests.mailhelp import clear_mailbox
from tests.oauthserver import CLIENT_ID, CLIENT_SECRET, AuthServer
from tests.servers import run_cli
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration


def oauth_env(services: Services, auth: AuthServer, **more: str) -> dict[str, str]:
    """A mailbox reached with OAuth2 only: no IMAP or SMTP password anywhere."""
    return {"SWITCHBOARD_OAUTH2_TOKEN_URL":
            f"http://127.0.0.1:{services.env['SB_OAUTH_PORT']}/token",
            "SWITCHBOARD_OAUTH2_CLIENT_ID": CLIENT_ID,
            "SWITCHBOARD_SMTP_PORT": services.env["SB_SUBMISSION_PORT"],
            "SWITCHBOARD_SMTP_USER": services.email("switchboard"), **more}


@pytest.fixture
async def bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                 auth: AuthServer) -> AsyncIterator[Bridge]:
    await clear_mailbox(services, "alice")
    async with oauth_bridge(services, slack, http, auth) as b:
        yield b


@asynccontextmanager
async def oauth_bridge(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                       auth: AuthServer) -> AsyncIterator[Bridge]:
    """A bridge whose mailbox logs in with a refresh token issued just now."""
    refresh = auth.refresh_token(services.email("switchboard"))
    async with running_bridge(services, slack, http, unset=("SWITCHBOARD_IMAP_PASSWORD",),
                              **oauth_env(services, auth,
                                          SWITCHBOARD_OAUTH2_REFRESH_TOKEN=refresh)) as b:
        yield b


async def test_mail_in_and_out_with_oauth2_tokens_and_an_expired_one_renewed(
        bridge: Bridge, auth: AuthServer) -> None:
    services = bridge.services
    assert "SWITCHBOARD_IMAP_PASSWORD" not in bridge.env
    # In: the IMAP ingest logged in with a token (Dovecot asked the server about it).
    card = await email_card(bridge, f"Alice <{services.email('alice')}>", "OAuth numbers")
    assert auth.introspected >= 1 and auth.issued == 1
    # Out: through the submission port, which takes only a login.
    await reply_by_email_from_slack(bridge, card, "Sent with a bearer token.")
    await bob_told(bridge, f"Sent by email to {services.email('alice')}")
    await received(services, "alice", "OAuth numbers")
    # The token expires (as every hour): the next login is refused, a new token is
    # fetched at once, and the mail still goes.
    auth.expire_all()
    second = await email_card(bridge, f"Alice <{services.email('alice')}>", "OAuth again")
    await reply_by_email_from_slack(bridge, second, "After the token expired.")
    sent = await received(services, "alice", "OAuth again")
    assert "After the token expired." in str(sent.get_body(("plain",)).get_content())
    assert auth.issued >= 2


def doctor_env(services: Services, auth: AuthServer, **more: str) -> dict[str, str]:
    """doctor's settings, on a store of this test's own: the tokens a login keeps there are
    this test's token server's (a new one each test)."""
    more.setdefault("SWITCHBOARD_REDIS_PREFIX", f"test-oauth-{uuid.uuid4().hex[:8]}")
    env = services.service_env(**oauth_env(services, auth, **more))
    env.pop("SWITCHBOARD_IMAP_PASSWORD", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def checks(out: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(out)["checks"]
            if c["name"] in ("imap", "smtp")}


async def test_doctor_shows_the_login_and_a_revoked_token_clearly(
        services: Services, auth: AuthServer) -> None:
    refresh = auth.refresh_token(services.email("switchboard"))
    env = doctor_env(services, auth, SWITCHBOARD_OAUTH2_REFRESH_TOKEN=refresh)
    code, out, _ = await run_cli("doctor", "--json", env=env)
    found = checks(out)
    assert found["imap"]["status"] == "OK", found
    assert "OAuth2 XOAUTH2 (refresh_token grant)" in found["imap"]["detail"]
    assert found["smtp"]["status"] == "OK" and "OAuth2" in found["smtp"]["detail"]
    auth.revoke(refresh)
    code, out, err = await run_cli("doctor", "--json", env=env)
    found = checks(out)
    assert code == 1 and found["imap"]["status"] == "FAIL"
    assert "invalid_grant" in found["imap"]["detail"]
    assert "authorize Switchboard again" in found["imap"]["detail"]
    assert refresh not in out + err  # secrets are never printed


async def test_app_only_access_with_oauthbearer(services: Services, auth: AuthServer) -> None:
    """Microsoft 365's app-only access: the client-credentials grant, no user's refresh
    token; and the other SASL mechanism, OAUTHBEARER."""
    env = doctor_env(services, auth, SWITCHBOARD_OAUTH2_CLIENT_SECRET=CLIENT_SECRET,
                     SWITCHBOARD_OAUTH2_MECHANISM="oauthbearer",
                     SWITCHBOARD_OAUTH2_SCOPE="https://outlook.office365.com/.default")
    code, out, _ = await run_cli("doctor", "--json", env=env)
    found = checks(out)
    assert found["imap"]["status"] == "OK", found
    assert "OAUTHBEARER (client_credentials grant)" in found["imap"]["detail"]
    assert found["smtp"]["status"] == "OK", found
    wrong = doctor_env(services, auth, SWITCHBOARD_OAUTH2_CLIENT_SECRET="not-the-secret")
    code, out, _ = await run_cli("doctor", "--json", env=wrong)
    assert code == 1 and "invalid_client" in checks(out)["imap"]["detail"]


@pytest.fixture
async def rotating(services: Services, slack: SlackControl, http: aiohttp.ClientSession,
                   auth: AuthServer) -> AsyncIterator[Bridge]:
    """A provider that rotates the refresh token on every use (the one sent is spent)."""
    auth.rotate = True
    async with oauth_bridge(services, slack, http, auth) as b:
        yield b


async def test_rotated_refresh_tokens_survive_restarts_and_doctor_while_running(
        rotating: Bridge, auth: AuthServer) -> None:
    """The configured refresh token is spent at the first login; every later start, and
    `switchboard doctor` run beside the running process, use the newest one (kept in the
    store), and doctor's IMAP and SMTP checks share one token fetch."""
    bridge, services = rotating, rotating.services
    alice = f"Alice <{services.email('alice')}>"
    await email_card(bridge, alice, "Before any restart")
    assert auth.issued == 1
    auth.expire_all()
    await bridge.restart()  # starts from the configured (now spent) refresh token
    await email_card(bridge, alice, "After the first restart")
    assert auth.issued == 2

    env = doctor_env(services, auth, **{k: v for k, v in bridge.env.items()
                                        if k.startswith("SWITCHBOARD_")})
    env.pop("SWITCHBOARD_IMAP_PASSWORD", None)
    code, out, err = await run_cli("doctor", "--json", env=env)
    found = checks(out)
    assert found["imap"]["status"] == "OK" and found["smtp"]["status"] == "OK", found
    # The running process's token, not a refresh of its own:
    assert code in (0, 1) and auth.issued == 2
    auth.expire_all()  # doctor now has to refresh: once, for both of its checks
    _, out, err = await run_cli("doctor", "--json", env=env)
    found = checks(out)
    assert found["imap"]["status"] == "OK" and found["smtp"]["status"] == "OK", found
    assert auth.issued == 3
    assert "invalid_grant" not in out + err

    auth.expire_all()
    await bridge.restart()  # and the running side carries on from doctor's refresh
    card = await email_card(bridge, alice, "After doctor")
    await reply_by_email_from_slack(bridge, card, "Still logged in.")
    await received(services, "alice", "After doctor")
    assert sum(1 for g in auth.refresh.values() if not g.revoked) == 1


async def test_a_refresh_token_rotated_away_is_told_apart_from_a_revoked_one(
        services: Services, auth: AuthServer) -> None:
    """A store put back to an older copy (a restore, a failover that lost a write) hands
    out a refresh token the provider has already replaced: said so, not "revoked"."""
    from bot.settings import Settings
    from bridges.email.oauth import OAuthError, OAuthLogin
    from storage.store import Store

    auth.rotate = True
    refresh = auth.refresh_token(services.email("switchboard"))
    env = oauth_env(services, auth, SWITCHBOARD_OAUTH2_REFRESH_TOKEN=refresh)
    settings = Settings.load({**{k: v for k, v in services.env.items()
                                 if k.startswith("SWITCHBOARD_")}, **env,
                              "SWITCHBOARD_REDIS_PREFIX": f"test-rot-{os.getpid()}"})
    assert settings.oauth2 is not None
    store = Store.open(settings.redis_url, settings.redis_prefix)
    try:
        login = OAuthLogin(settings.oauth2, store=store.logins)
        first = await login.token()
        older = await store.logins.load(login.name)
        # Refused, so rotated again: the older copy's refresh token is spent now.
        token = await login.token(refused=first)
        await store.logins.save(login.name, older)
        with pytest.raises(OAuthError) as refused:
            for _ in range(2):  # the older copy's access token first, then its refresh
                token = await login.token(refused=token)
        assert "rotated away" in str(refused.value), refused.value
        assert "revoked" not in str(refused.value)
        assert refresh not in str(refused.value)
        raw = str(await store.redis.hgetall(store.keys.oauth_login(login.name)))
        assert "rt-" not in raw and "at-" not in raw  # sealed: no token readable in Redis
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"{settings.redis_prefix}:*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()
