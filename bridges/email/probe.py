"""The mail links' contribution to `switchboard doctor`: reach, log in, read versions."""

from __future__ import annotations

import re
import ssl

import aioimaplib
import aiosmtplib

from bot.doctor import Check
from bot.settings import ImapSettings, Settings, SmtpSettings, TlsMode

TIMEOUT = 10.0


def _imap_client(cfg: ImapSettings) -> aioimaplib.IMAP4:
    if cfg.tls is TlsMode.IMPLICIT:
        return aioimaplib.IMAP4_SSL(cfg.host, cfg.port, timeout=TIMEOUT,
                                    ssl_context=ssl.create_default_context())
    return aioimaplib.IMAP4(cfg.host, cfg.port, timeout=TIMEOUT)


def _imap_version(lines: list[bytes]) -> str:
    text = b" ".join(lines).decode(errors="replace")
    fields = dict(re.findall(r'"([^"]+)" "([^"]*)"', text))
    return " ".join(v for v in (fields.get("name"), fields.get("version")) if v)


async def probe_imap(settings: Settings) -> list[Check]:
    cfg = settings.imap
    if cfg is None:
        return [Check.warn("imap", "not configured: no mailbox is watched over IMAP",
                           "set SWITCHBOARD_IMAP_HOST, _USER and _PASSWORD")]
    where = f"{cfg.host}:{cfg.port}"
    client = _imap_client(cfg)
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return [Check.fail("imap", f"cannot reach {where}: {exc}",
                           "start the IMAP server or correct SWITCHBOARD_IMAP_HOST/PORT")]
    try:
        ident = await client.id(name="switchboard")
        version = _imap_version(ident.lines) if ident.result == "OK" else ""
        login = await client.login(cfg.user, cfg.password)
        if login.result != "OK":
            reason = b" ".join(login.lines).decode(errors="replace")
            return [Check.fail("imap", f"{where} refused the login of {cfg.user}: {reason}",
                               "check SWITCHBOARD_IMAP_USER and SWITCHBOARD_IMAP_PASSWORD")]
        checks = [Check.ok("imap", f"{version or 'IMAP server'} at {where}, logged in as "
                                   f"{cfg.user}", version)]
        for mailbox in cfg.mailboxes:
            status = await client.select(mailbox)
            if status.result != "OK":
                checks.append(Check.fail("imap", f"mailbox {mailbox!r} cannot be opened",
                                         "create it or fix SWITCHBOARD_IMAP_MAILBOXES"))
        if cfg.tls is TlsMode.OFF:
            checks.append(Check.warn("imap", "TLS is off: the password crosses the network "
                                     "in clear", "set SWITCHBOARD_IMAP_TLS to implicit"))
        await client.logout()
        return checks
    except (aioimaplib.AioImapException, OSError, TimeoutError) as exc:
        return [Check.fail("imap", f"{where} broke off the conversation: {exc!r}",
                           "check the IMAP server's log")]


async def probe_smtp(settings: Settings) -> list[Check]:
    cfg = settings.smtp
    if cfg is None:
        return [Check.warn("smtp", "not configured: Switchboard cannot send email",
                           "set SWITCHBOARD_SMTP_HOST and SWITCHBOARD_BOT_EMAIL")]
    where = f"{cfg.host}:{cfg.port}"
    client = _smtp_client(cfg)
    try:
        greeting = await client.connect()
    except (aiosmtplib.SMTPException, OSError) as exc:
        return [Check.fail("smtp", f"cannot reach {where}: {exc}",
                           "start the SMTP server or correct SWITCHBOARD_SMTP_HOST/PORT")]
    try:
        banner = greeting.message.strip()
        version = banner.split(" ESMTP ", 1)[-1].split()[0] if " ESMTP " in banner else ""
        checks = [Check.ok("smtp", f"{banner} at {where}", version)]
        if cfg.user and cfg.password:
            try:
                await client.login(cfg.user, cfg.password)
            except aiosmtplib.SMTPException as exc:
                return [Check.fail("smtp", f"{where} refused the login of {cfg.user}: {exc}",
                                   "check SWITCHBOARD_SMTP_USER and SWITCHBOARD_SMTP_PASSWORD")]
        if cfg.tls is TlsMode.OFF:
            checks.append(Check.warn("smtp", "TLS is off: mail leaves in clear",
                                     "set SWITCHBOARD_SMTP_TLS to starttls or implicit"))
        return checks
    finally:
        client.close()


def _smtp_client(cfg: SmtpSettings) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=cfg.host, port=cfg.port, timeout=TIMEOUT,
        use_tls=cfg.tls is TlsMode.IMPLICIT,
        start_tls=True if cfg.tls is TlsMode.STARTTLS else (None if cfg.tls is TlsMode.AUTO
                                                            else False))
