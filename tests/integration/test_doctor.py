"""`switchboard doctor` against the real services, as an operator runs it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Services
from tests.servers import redis_server, run_cli
from tests.slackapi.apps import AppCredentials
from tests.slackapi.client import SlackControl
from tests.slackapi.server import Workspace

pytestmark = pytest.mark.integration

BIN = str(Path(sys.executable).parent)


def doctor_env(services: Services, slack: SlackControl, **overrides: str) -> dict[str, str]:
    env = services.service_env(
        SWITCHBOARD_SLACK_BOT_TOKEN=Workspace().bot_token,
        SWITCHBOARD_SLACK_SIGNING_SECRET="test-signing-secret",
        SWITCHBOARD_SLACK_API_URL=slack.api_url, **overrides)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def by_name(report: dict[str, object]) -> dict[str, list[dict[str, str]]]:
    checks: dict[str, list[dict[str, str]]] = {}
    for check in report["checks"]:  # type: ignore[attr-defined]
        checks.setdefault(check["name"], []).append(check)
    return checks


async def test_all_services_up(services: Services, slack: SlackControl) -> None:
    code, out, _ = await run_cli("doctor", "--json", env=doctor_env(services, slack))
    report = json.loads(out)
    checks = by_name(report)
    assert code == 0 and report["ok"]
    for name in ("python", "redis", "imap", "smtp", "slack", "matrix"):
        assert checks[name][0]["status"] == "OK", checks[name]
    assert checks["redis"][0]["version"].startswith("7.")
    assert checks["imap"][0]["version"].startswith("Dovecot")
    assert checks["matrix"][0]["detail"].startswith("Synapse")
    assert "T0SWITCH1" in checks["slack"][0]["detail"]


async def test_text_report_is_readable(services: Services, slack: SlackControl) -> None:
    code, out, _ = await run_cli("doctor", env=doctor_env(services, slack))
    assert code == 0
    assert "OK    redis" in out and "0 failures" in out


async def test_a_stopped_redis_fails_with_a_fix(services: Services, slack: SlackControl) -> None:
    with redis_server() as redis:
        env = doctor_env(services, slack, SWITCHBOARD_REDIS_URL=redis.url)
        code, out, _ = await run_cli("doctor", "--json", env=env)
        assert code == 0, out
        redis.stop()
        code, out, _ = await run_cli("doctor", "--json", env=env)
    report = json.loads(out)
    (check,) = by_name(report)["redis"]
    assert code == 1 and not report["ok"]
    assert check["status"] == "FAIL"
    assert f"127.0.0.1:{redis.port}" in check["detail"]
    assert "redis-server" in check["fix"]


async def test_redis_without_aof_is_a_warning(services: Services, slack: SlackControl) -> None:
    with redis_server(appendonly=False) as redis:
        env = doctor_env(services, slack, SWITCHBOARD_REDIS_URL=redis.url)
        code, out, _ = await run_cli("doctor", "--json", env=env)
    checks = by_name(json.loads(out))["redis"]
    assert code == 0
    assert [c["status"] for c in checks] == ["OK", "WARN"]
    assert "appendonly" in checks[1]["fix"]


async def test_wrong_imap_password(services: Services, slack: SlackControl) -> None:
    env = doctor_env(services, slack, SWITCHBOARD_IMAP_PASSWORD="wrong")
    code, out, _ = await run_cli("doctor", "--json", env=env)
    (check,) = by_name(json.loads(out))["imap"]
    assert code == 1
    assert check["status"] == "FAIL" and "refused the login" in check["detail"]
    assert "SWITCHBOARD_IMAP_PASSWORD" in check["fix"]


async def test_missing_slack_scope_is_named(services: Services, slack: SlackControl) -> None:
    await slack.set_scopes(["chat:write", "im:write", "users:read", "files:write", "commands"])
    code, out, _ = await run_cli("doctor", "--json", env=doctor_env(services, slack))
    checks = by_name(json.loads(out))["slack"]
    assert code == 1
    assert checks[1]["status"] == "FAIL"
    assert "users:read.email" in checks[1]["detail"]


async def test_socket_mode_connects_and_a_wrong_app_token_is_named(
        services: Services, slack: SlackControl) -> None:
    app_token = AppCredentials().app_token
    code, out, _ = await run_cli("doctor", "--json", env=doctor_env(
        services, slack, SWITCHBOARD_SLACK_APP_TOKEN=app_token))
    (check,) = by_name(json.loads(out))["slack socket mode"]
    assert code == 0 and check["status"] == "OK"
    assert "connected as app A0SWITCHB1" in check["detail"]
    code, out, _ = await run_cli("doctor", "--json", env=doctor_env(
        services, slack, SWITCHBOARD_SLACK_APP_TOKEN="xapp-1-someone-elses"))
    (check,) = by_name(json.loads(out))["slack socket mode"]
    assert code == 1 and check["status"] == "FAIL"
    assert "invalid_auth" in check["detail"] and "SWITCHBOARD_SLACK_APP_TOKEN" in check["fix"]


async def test_unconfigured_network_is_a_warning_not_a_failure(
        services: Services, slack: SlackControl) -> None:
    env = doctor_env(services, slack)
    for key in ("SWITCHBOARD_MATRIX_HOMESERVER", "SWITCHBOARD_MATRIX_USER",
                "SWITCHBOARD_MATRIX_PASSWORD"):
        env.pop(key)
    code, out, _ = await run_cli("doctor", "--json", env=env)
    (check,) = by_name(json.loads(out))["matrix"]
    assert code == 0 and check["status"] == "WARN"


async def test_invalid_settings_name_the_key(services: Services, slack: SlackControl) -> None:
    env = doctor_env(services, slack, SWITCHBOARD_IMAP_PORT="imap", SWITCHBOARD_REDIS_URL="x")
    code, _, err = await run_cli("doctor", env=env)
    assert code == 2
    assert "SWITCHBOARD_IMAP_PORT" in err and "SWITCHBOARD_REDIS_URL" in err


async def test_tls_is_used_where_offered(services: Services, slack: SlackControl) -> None:
    code, out, _ = await run_cli("doctor", "--json", env=doctor_env(services, slack))
    checks = by_name(json.loads(out))
    assert code == 0
    assert "(STARTTLS)" in checks["imap"][0]["detail"]
    assert "(STARTTLS)" in checks["smtp"][0]["detail"]
    env = doctor_env(services, slack, SWITCHBOARD_IMAP_TLS="implicit",
                     SWITCHBOARD_IMAP_PORT=services.env["SB_IMAPS_PORT"],
                     SWITCHBOARD_SMTP_TLS="implicit",
                     SWITCHBOARD_SMTP_PORT=services.env["SB_SMTPS_PORT"])
    code, out, _ = await run_cli("doctor", "--json", env=env)
    checks = by_name(json.loads(out))
    assert code == 0, out
    assert "(implicit TLS)" in checks["imap"][0]["detail"]
    assert "(implicit TLS)" in checks["smtp"][0]["detail"]


async def test_plain_smtp_while_tls_is_required(services: Services,
                                                slack: SlackControl) -> None:
    env = doctor_env(services, slack, SWITCHBOARD_REQUIRE_TLS="true",
                     SWITCHBOARD_SMTP_PORT=services.env["SB_SMTP_PLAIN_PORT"])
    code, out, _ = await run_cli("doctor", "--json", env=env)
    (check,) = by_name(json.loads(out))["smtp"]
    assert code == 1
    assert check["status"] == "FAIL" and "does not offer STARTTLS" in check["detail"]
    # without the requirement, the same server is used in clear, with a warning
    env.pop("SWITCHBOARD_REQUIRE_TLS")
    code, out, _ = await run_cli("doctor", "--json", env=env)
    checks = by_name(json.loads(out))["smtp"]
    assert code == 0 and [c["status"] for c in checks] == ["OK", "WARN"]


async def test_untrusted_certificate_fails_with_a_fix(services: Services,
                                                      slack: SlackControl) -> None:
    env = doctor_env(services, slack)
    env.pop("SWITCHBOARD_TLS_CA_FILE")
    code, out, _ = await run_cli("doctor", "--json", env=env)
    checks = by_name(json.loads(out))
    assert code == 1
    for name in ("imap", "smtp"):
        assert checks[name][0]["status"] == "FAIL"
        assert "certificate is not valid" in checks[name][0]["detail"]
        assert "SWITCHBOARD_TLS_CA_FILE" in checks[name][0]["fix"]


async def test_doctor_says_whether_the_matrix_bot_is_held_to_the_rate_limit(
        services: Services, slack: SlackControl) -> None:
    """The test Synapse keeps its default message limit for people and exempts the bot
    (as a production bridge must be); another admin account is held to it, and a plain
    account cannot read the admin API: each told as it is, with how to exempt it."""
    _, out, _ = await run_cli("doctor", "--json", env=doctor_env(services, slack))
    exempt = [c for c in by_name(json.loads(out))["matrix"] if "rate limit" in c["detail"]]
    assert [c["status"] for c in exempt] == ["OK"] and "exempt" in exempt[0]["detail"]
    for user, status, words in (("sb-admin", "WARN", "posts under the homeserver's"),
                                ("alice", "WARN", "cannot tell whether")):
        env = doctor_env(services, slack, SWITCHBOARD_MATRIX_USER=services.matrix_id(user))
        _, out, _ = await run_cli("doctor", "--json", env=env)
        (check,) = [c for c in by_name(json.loads(out))["matrix"]
                    if "rate limit" in c["detail"]]
        assert check["status"] == status and words in check["detail"], check
        assert "override_ratelimit" in check["fix"] and "application service" in check["fix"]
