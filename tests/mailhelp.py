"""Mail and Matrix helpers for integration tests: send over the real SMTP server, clear
and read mailboxes over the real IMAP server, read rooms over the real Matrix API."""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.conftest import Services

T = TypeVar("T")


def make_mail(sender: str, to: str, subject: str, body: str, *,
              in_reply_to: str | None = None, attachments: tuple[tuple[str, bytes], ...] = ()
              ) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="partner.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    for name, data in attachments:
        maintype, _, subtype = ("application/pdf" if name.endswith(".pdf")
                                else "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _smtp_send(port: int, sender: str, recipients: list[str], data: bytes,
               source: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as smtp:
        smtp.sendmail(sender, recipients, data)


# The test domains' SPF records allow 127.0.0.1 only: mail sent from here comes from
# "somewhere else" and fails SPF.
ELSEWHERE = "127.0.0.2"


async def send_raw(services: Services, sender: str, recipients: list[str], data: bytes,
                   port: int | None = None, source: str = "127.0.0.1") -> None:
    """Submit bytes to the test SMTP server (or another SMTP port), as a mail client would."""
    await asyncio.to_thread(_smtp_send, port or int(services.env["SB_SMTP_PORT"]), sender,
                            recipients, data, source)


def dkim_signed(services: Services, msg: EmailMessage) -> bytes:
    """``msg`` signed with the test domains' DKIM key (published by the local DNS server)."""
    import dkim

    domain = str(msg["From"]).rpartition("@")[2].strip(">").encode()
    with open(services.env["SB_DKIM_KEY"], "rb") as f:
        key = f.read()
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return bytes(dkim.sign(raw, services.env["SB_DKIM_SELECTOR"].encode(), domain, key,
                           include_headers=[b"from", b"to", b"subject", b"message-id",
                                            b"date"])) + raw


async def send_mail(services: Services, msg: EmailMessage, port: int | None = None,
                    source: str = "127.0.0.1", data: bytes | None = None) -> None:
    recipients = [a.strip() for a in str(msg["To"]).split(",")]
    envelope_from = str(msg["From"]).rpartition("<")[2].strip(">")
    await send_raw(services, envelope_from, recipients, data or msg.as_bytes(), port, source)


def _imap(services: Services, user: str) -> tuple[imaplib.IMAP4, int]:
    """``user`` is a name on the main test domain, or a whole address."""
    client = imaplib.IMAP4("127.0.0.1", int(services.env["SB_IMAP_PORT"]))
    client.login(user if "@" in user else services.email(user), services.password)
    _, data = client.select("INBOX")
    return client, int(data[0] or 0)


def _clear(services: Services, user: str) -> None:
    client, count = _imap(services, user)
    if count:
        client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    client.logout()


async def clear_mailbox(services: Services, user: str) -> None:
    await asyncio.to_thread(_clear, services, user)


def _fetch_all(services: Services, user: str) -> list[bytes]:
    client, _ = _imap(services, user)
    _, data = client.uid("search", None, "ALL")
    found = []
    for uid in data[0].split():
        _, parts = client.uid("fetch", uid, "(BODY.PEEK[])")
        found.append(bytes(parts[0][1]))  # type: ignore[index]
    client.logout()
    return found


async def mailbox(services: Services, user: str) -> list[bytes]:
    return await asyncio.to_thread(_fetch_all, services, user)


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0,
                     what: str = "the expected state") -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def new_matrix_user(services: Services, http: aiohttp.ClientSession,
                          prefix: str = "new") -> MatrixUser:
    """A user registered just now (shared-secret registration, as an operator would),
    so nobody shares a room with them yet."""
    import hashlib
    import hmac
    import uuid

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    secrets_file = Path(services.env["SB_SYNAPSE_SECRETS"])
    secret = (await asyncio.to_thread(secrets_file.read_text)).splitlines()[0].strip()
    url = f"{services.env['SWITCHBOARD_MATRIX_HOMESERVER']}/_synapse/admin/v1/register"
    async with http.get(url) as r:
        nonce = (await r.json())["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), services.password.encode(),
                             b"notadmin"]))
    body = {"nonce": nonce, "username": name, "password": services.password, "admin": False,
            "mac": mac.hexdigest()}
    async with http.post(url, json=body) as r:
        r.raise_for_status()
    return await MatrixUser(services, name, http).login()


class MatrixUser:
    """A person on the test homeserver, using the client-server API directly."""

    def __init__(self, services: Services, name: str, http: aiohttp.ClientSession) -> None:
        self.base = services.env["SWITCHBOARD_MATRIX_HOMESERVER"]
        self.user_id = services.matrix_id(name)
        self.password = services.password
        self.http = http
        self.token = ""

    async def login(self) -> MatrixUser:
        body = {"type": "m.login.password", "password": self.password,
                "identifier": {"type": "m.id.user", "user": self.user_id}}
        async with self.http.post(f"{self.base}/_matrix/client/v3/login", json=body) as r:
            r.raise_for_status()
            self.token = (await r.json())["access_token"]
        return self

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One client-server API call; waits out 429s as a real client does (people keep
        Synapse's default message rate limit on the test homeserver)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        for _ in range(20):
            async with self.http.request(method, f"{self.base}/_matrix/client/v3{path}",
                                         json=body, headers=headers) as r:
                data = await r.json()
                if r.status == 429:
                    await asyncio.sleep(data.get("retry_after_ms", 1000) / 1000)
                    continue
                if r.status >= 400:
                    raise AssertionError(f"{method} {path}: {r.status} {data}")
                return data
        raise AssertionError(f"{method} {path}: still rate-limited")

    async def join(self, room: str) -> None:
        await self.call("POST", f"/join/{room}", {})

    async def leave(self, room: str) -> None:
        """Leave and forget ``room``: a homeserver's sync cost grows with every room kept."""
        await self.call("POST", f"/rooms/{room}/leave", {})
        await self.call("POST", f"/rooms/{room}/forget", {})

    async def logout(self) -> None:
        await self.call("POST", "/logout", {})

    async def messages(self, room: str, limit: int = 200) -> list[dict[str, Any]]:
        """Message events in ``room``, oldest first, as this user's client would get them."""
        data = await self.call("GET", f"/rooms/{room}/messages?dir=b&limit={limit}")
        return [e for e in reversed(data["chunk"]) if e["type"] == "m.room.message"]

    async def invites(self) -> list[str]:
        data = await self.call("GET", "/sync?timeout=0")
        return list(data.get("rooms", {}).get("invite", {}))

    async def download(self, mxc: str) -> bytes:
        server, _, media = mxc[len("mxc://"):].partition("/")
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.base}/_matrix/client/v1/media/download/{server}/{media}"
        async with self.http.get(url, headers=headers) as r:
            r.raise_for_status()
            return await r.read()
