"""Opening IMAP and SMTP links with the TLS the settings ask for.

``auto`` uses STARTTLS whenever the server offers it (and, with ``require_tls``,
refuses a server that does not); ``starttls`` demands it; ``implicit`` speaks TLS
from the first byte; ``off`` never does. Certificates are verified against the
system's authorities or ``SWITCHBOARD_TLS_CA_FILE``.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import aioimaplib
import aiosmtplib

from bot.settings import ImapSettings, SmtpSettings, TlsMode
from bridges.errors import MailError

if TYPE_CHECKING:
    from bridges.email.oauth import OAuthLogin

TIMEOUT = 30.0


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Built once per CA file (loading authorities costs a millisecond or two per send);
    # a rotated CA file is read again at the next start.
    return ssl.create_default_context(cafile=ca_file)


async def imap_connect(cfg: ImapSettings, *, ca_file: str | None, require_tls: bool,
                       lost: Callable[[Exception | None], None] | None = None
                       ) -> tuple[aioimaplib.IMAP4, str]:
    """A greeted (not yet logged in) IMAP client, and how it is protected."""
    context = tls_context(ca_file)
    if cfg.tls is TlsMode.IMPLICIT:
        client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(cfg.host, cfg.port, timeout=TIMEOUT,
                                                         ssl_context=context)
        if lost is not None:
            client.protocol.conn_lost_cb = lost
        await client.wait_hello_from_server()
        return client, "implicit TLS"
    client = aioimaplib.IMAP4(cfg.host, cfg.port, timeout=TIMEOUT, conn_lost_cb=lost)
    await client.wait_hello_from_server()
    if cfg.tls is TlsMode.OFF:
        return client, "plain"
    offered = "STARTTLS" in client.protocol.capabilities
    if not offered:
        if cfg.tls is TlsMode.STARTTLS or require_tls:
            await _close(client)
            raise MailError(f"{cfg.host}:{cfg.port} does not offer STARTTLS and TLS is "
                            "required; use an IMAP server with TLS, or the implicit-TLS port")
        return client, "plain (the server offers no STARTTLS)"
    await _starttls(client, context, cfg.host)
    return client, "STARTTLS"


async def _starttls(client: aioimaplib.IMAP4, context: ssl.SSLContext, host: str) -> None:
    # aioimaplib knows the command but has no helper: send it, then upgrade the transport.
    protocol = client.protocol
    answer = await protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag(),
                                                       loop=protocol.loop))
    if answer.result != "OK":
        raise MailError(f"{host} refused STARTTLS: {answer.lines}")
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(protocol.transport, protocol, context,
                                              server_hostname=host)
    await protocol.capability()  # RFC 3501: forget what was said before TLS


async def _close(client: aioimaplib.IMAP4) -> None:
    transport = client.protocol.transport
    if transport is not None:
        transport.close()
    await asyncio.sleep(0)


def smtp_client(cfg: SmtpSettings, *, ca_file: str | None, require_tls: bool) -> aiosmtplib.SMTP:
    start_tls: bool | None
    if cfg.tls is TlsMode.STARTTLS or (cfg.tls is TlsMode.AUTO and require_tls):
        start_tls = True  # aiosmtplib fails when the server does not offer it
    elif cfg.tls is TlsMode.AUTO:
        start_tls = None  # upgrade when offered
    else:
        start_tls = False
    # No login here: smtp_login does it, with the password or an OAuth2 token.
    return aiosmtplib.SMTP(hostname=cfg.host, port=cfg.port, use_tls=cfg.tls is TlsMode.IMPLICIT,
                           start_tls=start_tls, tls_context=tls_context(ca_file),
                           timeout=TIMEOUT)


async def imap_login(client: aioimaplib.IMAP4, cfg: ImapSettings,
                     oauth: OAuthLogin | None) -> None:
    """Log in with the password, or with an OAuth2 access token (SASL XOAUTH2 or
    OAUTHBEARER); a token the server refuses is renewed once, then the login fails with
    the server's reason. MailError otherwise."""
    if oauth is None:
        answer = await client.login(cfg.user, cfg.password)
        if answer.result != "OK":
            raise MailError(f"{cfg.host}:{cfg.port} refused the login of {cfg.user}: "
                            f"{_text(answer.lines)}")
        return
    reason, refused = "", ""
    for _ in range(2):
        token = await oauth.token(refused=refused)
        answer = await _authenticate(client, oauth, cfg.user, token)
        if answer.result == "OK":
            return
        reason, refused = _text(answer.lines), token
    raise MailError(f"{cfg.host}:{cfg.port} refused the {oauth.describe} login of "
                    f"{cfg.user}, even with a new token: {reason}", transient=False)


async def _authenticate(client: aioimaplib.IMAP4, oauth: OAuthLogin, user: str,
                        token: str) -> aioimaplib.Response:
    """AUTHENTICATE with the initial response (SASL-IR). On failure the server may send a
    challenge with the error; the client answers it with an empty line (RFC 7628) and
    the server says NO."""
    protocol = client.protocol
    mechanism = oauth.cfg.mechanism.upper()
    command = _SaslCommand(protocol, "AUTHENTICATE", protocol.new_tag(), mechanism,
                           oauth.initial_response(user, token), loop=protocol.loop)
    answer = await asyncio.wait_for(protocol.execute(command, scrub=token), TIMEOUT)
    if answer.result == "OK":
        protocol.state = aioimaplib.AUTH
    return answer


class _SaslCommand(aioimaplib.Command):  # type: ignore[misc]  # aioimaplib is untyped
    """AUTHENTICATE whose error challenge (``+ <base64 JSON>``) is answered, so the server
    can finish with its NO instead of waiting for the client."""

    def __init__(self, protocol: aioimaplib.IMAP4ClientProtocol, *args: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(*args, loop=loop)
        self._protocol = protocol

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        if result == "Pending" and line.startswith(b"+") and self._protocol.transport:
            # XOAUTH2 answers with an empty response, OAUTHBEARER with %x01 (base64).
            self._protocol.transport.write(b"\r\n" if self.args[0] == "XOAUTH2"
                                           else b"AQ==\r\n")
        super().append_to_resp(line, result)


def _text(lines: list[bytes]) -> str:
    return b" ".join(lines).decode(errors="replace")


async def smtp_login(client: aiosmtplib.SMTP, cfg: SmtpSettings,
                     oauth: OAuthLogin | None) -> None:
    """After connecting: the password login (when a user is set), or the OAuth2 one, a
    refused token renewed once. aiosmtplib's errors pass through."""
    if oauth is None:
        if cfg.user and cfg.password:
            await client.login(cfg.user, cfg.password)
        return
    user = cfg.user or ""
    refused = ""
    for fresh in (False, True):
        token = await oauth.token(refused=refused)
        refused = token
        try:
            if oauth.cfg.mechanism == "oauthbearer":
                answer = await client.execute_command(
                    b"AUTH", b"OAUTHBEARER", oauth.initial_response(user, token).encode())
                if answer.code == 334:  # the error challenge: answered, then refused
                    answer = await client.execute_command(b"AQ==")  # %x01, base64
                if answer.code != 235:
                    raise aiosmtplib.SMTPAuthenticationError(answer.code, answer.message)
            else:
                await client.auth_xoauth2(user, token)
            return
        except aiosmtplib.SMTPAuthenticationError:
            if fresh:
                raise
