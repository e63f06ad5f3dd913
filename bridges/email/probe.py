"""The mail links' contribution to `switchboard doctor`: reach, TLS and its certificate,
log in, read versions."""

from __future__ import annotations

import asyncio
import re
import ssl

import aioimaplib
import aiosmtplib

from bot.doctor import Check
from bot.settings import Settings, TlsMode
from bot.settings_mailboxes import MailboxSettings
from bot.stores import LoginStore
from bridges.email.connect import imap_connect, imap_login, smtp_client, smtp_login
from bridges.email.oauth import OAuthLogin, mailbox_login, oauth_login
from bridges.errors import MailError

_CERT_FIX = ("renew the server's certificate, or point SWITCHBOARD_TLS_CA_FILE at the "
             "authority that signed it")


def _imap_version(lines: list[bytes]) -> str:
    text = b" ".join(lines).decode(errors="replace")
    fields = dict(re.findall(r'"([^"]+)" "([^"]*)"', text))
    return " ".join(v for v in (fields.get("name"), fields.get("version")) if v)


def _tls_failure(name: str, where: str, exc: BaseException) -> Check | None:
    cert = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.__cause__ \
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError) else None
    if cert is not None:
        return Check.fail(name, f"{where}: the TLS certificate is not valid: "
                                f"{getattr(cert, 'verify_message', cert)}", _CERT_FIX)
    return None


async def probe_imap(settings: Settings, oauth: OAuthLogin | None = None,
                     store: LoginStore | None = None) -> list[Check]:
    """Every watched mailbox, each on its own: one that fails says so and the others are
    still looked at. With one mailbox its checks are called ``imap``; with several,
    ``imap <name>``."""
    if not settings.mailboxes:
        return [Check.warn("imap", "not configured: no mailbox is watched over IMAP",
                           "set SWITCHBOARD_IMAP_HOST, _USER and _PASSWORD")]
    several = len(settings.mailboxes) > 1
    found = await asyncio.gather(*(
        _probe_mailbox(settings, box, (mailbox_login(settings, box, store) if box.own_login
                                       else oauth or oauth_login(settings)),
                       f"imap {box.name}" if several else "imap",
                       f"its [[mailboxes]] table ({box.name})" if box.table else "")
        for box in settings.mailboxes))
    return [check for checks in found for check in checks]


async def _probe_mailbox(settings: Settings, box: MailboxSettings, oauth: OAuthLogin | None,
                         name: str, table: str) -> list[Check]:
    cfg = box.imap
    where = f"{cfg.host}:{cfg.port}"
    fix_tls = f"set tls = \"implicit\" in {table}" if table else \
        "use SWITCHBOARD_IMAP_TLS=implicit with its IMAPS port"
    try:
        client, protection = await imap_connect(cfg, ca_file=settings.tls_ca_file,
                                                require_tls=settings.require_tls)
    except MailError as exc:
        return [Check.fail(name, str(exc), f"enable TLS on the IMAP server, or {fix_tls}")]
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return [_tls_failure(name, where, exc) or Check.fail(
            name, f"cannot reach {where}: {exc}",
            f"start the IMAP server or correct host and port in {table}" if table else
            "start the IMAP server or correct SWITCHBOARD_IMAP_HOST/PORT")]
    try:
        ident = await client.id(name="switchboard")
        version = _imap_version(ident.lines) if ident.result == "OK" else ""
        try:
            await imap_login(client, cfg, oauth)
        except MailError as exc:
            fix = (f"check user and [mailboxes.oauth2] in {table}" if table and oauth else
                   f"check user and password in {table}" if table else
                   "check the SWITCHBOARD_OAUTH2_* settings" if oauth else
                   "check SWITCHBOARD_IMAP_USER and SWITCHBOARD_IMAP_PASSWORD")
            return [Check.fail(name, str(exc), fix)]
        how = oauth.describe if oauth else "password"
        checks = [Check.ok(name, f"{version or 'IMAP server'} at {where} ({protection}), "
                                 f"logged in as {cfg.user} ({how})", version)]
        for mailbox in cfg.mailboxes:
            status = await client.select(mailbox)
            if status.result != "OK":
                checks.append(Check.fail(name, f"mailbox {mailbox!r} cannot be opened",
                                         f"create it or fix folders in {table}" if table else
                                         "create it or fix SWITCHBOARD_IMAP_MAILBOXES"))
        if protection.startswith("plain"):
            checks.append(Check.warn(name, "the link is not encrypted: the password "
                                     "crosses the network in clear",
                                     "enable TLS on the server and set "
                                     + (f"tls in {table}" if table else "SWITCHBOARD_IMAP_TLS")
                                     + " to auto, starttls or implicit"))
        await client.logout()
        return checks
    except (aioimaplib.AioImapException, OSError, TimeoutError) as exc:
        return [Check.fail(name, f"{where} broke off the conversation: {exc!r}",
                           "check the IMAP server's log")]


async def probe_smtp(settings: Settings, oauth: OAuthLogin | None = None) -> list[Check]:
    cfg = settings.smtp
    if cfg is None:
        return [Check.warn("smtp", "not configured: Switchboard cannot send email",
                           "set SWITCHBOARD_SMTP_HOST and SWITCHBOARD_BOT_EMAIL")]
    where = f"{cfg.host}:{cfg.port}"
    client = smtp_client(cfg, ca_file=settings.tls_ca_file, require_tls=settings.require_tls)
    try:
        greeting = await client.connect()
    except aiosmtplib.SMTPException as exc:
        tls = _tls_failure("smtp", where, exc)
        if tls is not None:
            return [tls]
        if "STARTTLS" in str(exc):
            return [Check.fail("smtp", f"{where} does not offer STARTTLS and TLS is "
                                       f"required: {exc}",
                               "enable STARTTLS on the SMTP server, or use "
                               "SWITCHBOARD_SMTP_TLS=implicit with its submissions port")]
        return [Check.fail("smtp", f"cannot reach {where}: {exc}",
                           "start the SMTP server or correct SWITCHBOARD_SMTP_HOST/PORT")]
    except (OSError, ssl.SSLError) as exc:
        return [_tls_failure("smtp", where, exc) or Check.fail(
            "smtp", f"cannot reach {where}: {exc}",
            "start the SMTP server or correct SWITCHBOARD_SMTP_HOST/PORT")]
    try:
        banner = greeting.message.strip()
        encrypted = client.is_connected and (cfg.tls is TlsMode.IMPLICIT
                                             or client.get_transport_info("sslcontext")
                                             is not None)
        protection = "implicit TLS" if cfg.tls is TlsMode.IMPLICIT else (
            "STARTTLS" if encrypted else "plain")
        version = banner.split(" ESMTP ", 1)[-1].split()[0] if " ESMTP " in banner else ""
        checks = [Check.ok("smtp", f"{banner} at {where} ({protection})", version)]
        oauth = oauth or oauth_login(settings)
        if oauth is not None or (cfg.user and cfg.password):
            try:
                await smtp_login(client, cfg, oauth)
            except (aiosmtplib.SMTPException, MailError) as exc:
                fix = ("check SWITCHBOARD_SMTP_USER and the SWITCHBOARD_OAUTH2_* settings"
                       if oauth else
                       "check SWITCHBOARD_SMTP_USER and SWITCHBOARD_SMTP_PASSWORD")
                return [Check.fail("smtp", f"{where} refused the login of {cfg.user}: {exc}",
                                   fix)]
            checks[0] = Check.ok("smtp", f"{banner} at {where} ({protection}), logged in as "
                                         f"{cfg.user} ({oauth.describe if oauth else 'password'})",
                                 version)
        if protection == "plain":
            checks.append(Check.warn("smtp", "the link is not encrypted: mail leaves in clear",
                                     "enable STARTTLS on the server and set "
                                     "SWITCHBOARD_SMTP_TLS to auto, starttls or implicit"))
        return checks
    finally:
        client.close()
