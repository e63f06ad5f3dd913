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

import aioimaplib
import aiosmtplib

from bot.settings import ImapSettings, SmtpSettings, TlsMode
from bridges.errors import MailError

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
    return aiosmtplib.SMTP(hostname=cfg.host, port=cfg.port, username=cfg.user,
                           password=cfg.password, use_tls=cfg.tls is TlsMode.IMPLICIT,
                           start_tls=start_tls, tls_context=tls_context(ca_file),
                           timeout=TIMEOUT)
