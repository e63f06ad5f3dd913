"""Hostile MIME through the whole ingest loop: hypothesis builds the messages, they are
put in the bot's real IMAP mailbox, and Switchboard (parser, sender checks, routing,
posting) must get through all of them and still bridge the ordinary email after."""

from __future__ import annotations

import asyncio
import imaplib
import uuid

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bridge import running_bridge
from tests.conftest import Services
from tests.fuzz.test_hostile_mime import header_lines, parts
from tests.mailhelp import eventually, make_mail
from tests.slackapi.client import SlackControl

pytestmark = pytest.mark.integration
COUNT = 60


def hostile_messages(count: int) -> list[bytes]:
    """``count`` messages drawn by hypothesis (derandomized: the same ones every run)."""
    found: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(header_lines(), parts(), st.binary(max_size=300), st.booleans())
    def collect(headers: bytes, body: bytes, tail: bytes, routed: bool) -> None:
        # Half of them are addressed to a routed mailbox, so they reach the posting code.
        to = b"To: support@switchboard.test\r\n" if routed else b""
        found.append(to + headers + b"\r\n" + body + tail)

    collect()
    return found


def append_all(services: Services, messages: list[bytes]) -> int:
    client = imaplib.IMAP4("127.0.0.1", int(services.env["SB_IMAP_PORT"]))
    client.login(services.email("switchboard"), services.password)
    appended = 0
    for raw in messages:
        try:
            status, _ = client.append("INBOX", None, None, raw)
            appended += status == "OK"
        except imaplib.IMAP4.error:
            pass  # the server itself refused it (NUL bytes, say): never reaches us
    client.logout()
    return appended


async def test_ingest_loop_survives_hostile_mail(services: Services, slack: SlackControl,
                                                 http: aiohttp.ClientSession) -> None:
    messages = hostile_messages(COUNT)
    async with running_bridge(services, slack, http) as bridge:
        appended = await asyncio.to_thread(append_all, services, messages)
        assert appended >= COUNT // 2
        after = make_mail("alice@partner.test", services.email("support"),
                          "After the storm " + uuid.uuid4().hex[:6], "Still standing.")
        await asyncio.to_thread(append_all, services, [after.as_bytes()])

        async def posted() -> bool:
            return any(str(after["Subject"]) in str(p) for p in await bridge.slack_posts())

        await eventually(posted, within=120, what="the ordinary email after the hostile ones")
        ingest = bridge.runtime.ingests[0]
        assert ingest.connected
        saved = await bridge.runtime.store.ingest.checkpoint(ingest.account, "INBOX")
        assert saved is not None and saved.last_uid >= appended + 1
