"""Shared fixtures. Integration tests start the real services through the project's
own script (idempotent: already running services are reused) and read the settings
it writes."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from storage.store import Store
from tests.oauthserver import AuthServer
from tests.slackapi.client import SlackControl
from tests.slackapi.server import SlackServer

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.sh"


@dataclass(frozen=True)
class Services:
    env: dict[str, str]  # SWITCHBOARD_* settings reaching the services, plus SB_* facts

    @property
    def redis_url(self) -> str:
        return self.env["SWITCHBOARD_REDIS_URL"]

    @property
    def password(self) -> str:
        return self.env["SB_TEST_PASSWORD"]

    @property
    def mail_domain(self) -> str:
        return self.env["SB_MAIL_DOMAIN"]

    @property
    def matrix_server(self) -> str:
        return self.env["SB_MATRIX_SERVER_NAME"]

    def email(self, user: str) -> str:
        return f"{user}@{self.mail_domain}"

    def matrix_id(self, user: str) -> str:
        return f"@{user}:{self.matrix_server}"

    def service_env(self, **overrides: str) -> dict[str, str]:
        """An environment for a switchboard subprocess: the SWITCHBOARD_* settings only."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        base.update({k: v for k, v in self.env.items() if k.startswith("SWITCHBOARD_")})
        base.update(overrides)
        return base


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def services() -> Services:
    subprocess.run(["bash", str(SERVICES), "up"], check=True)
    path = subprocess.run(["bash", str(SERVICES), "env"], check=True, capture_output=True,
                          text=True).stdout.strip()
    return Services(read_env_file(Path(path)))


@pytest.fixture
async def auth(services: Services) -> AsyncIterator[AuthServer]:
    """The mail provider's OAuth2 server (tokens, and their introspection for Dovecot)."""
    server = AuthServer(app_user=services.email("switchboard"))
    await server.start(int(services.env["SB_OAUTH_PORT"]))
    yield server
    await server.stop()


@contextlib.asynccontextmanager
async def redis_store(services: Services) -> AsyncIterator[Store]:
    """A store on the real Redis under a prefix of its own, removed afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    s = Store.open(services.redis_url, prefix)
    try:
        yield s
    finally:
        keys = [k async for k in s.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await s.redis.delete(*keys)
        await s.close()


@pytest.fixture
async def store(services: Services) -> AsyncIterator[Store]:
    async with redis_store(services) as s:
        yield s


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
async def slack_server() -> AsyncIterator[SlackServer]:
    server = SlackServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def slack(slack_server: SlackServer, http: aiohttp.ClientSession) -> SlackControl:
    """The local Slack server, emptied for this test."""
    control = SlackControl(slack_server.base_url, http)
    await control.reset()
    return control
