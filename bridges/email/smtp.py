"""Sending mail over SMTP submission (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from bot.headers import UnsafeHeader, seal
from bot.settings import Settings, SmtpSettings
from bot.stores import LoginStore
from bridges.email.connect import smtp_client, smtp_login
from bridges.email.oauth import OAuthLogin, oauth_login
from bridges.errors import MailError


class SmtpSender:
    def __init__(self, cfg: SmtpSettings, *, ca_file: str | None = None,
                 require_tls: bool = False, oauth: OAuthLogin | None = None) -> None:
        self.cfg = cfg
        self.oauth = oauth
        self.ca_file = ca_file
        self.require_tls = require_tls

    async def send(self, message: EmailMessage) -> None:
        """Submit ``message``; MailError (``transient`` for 4xx and outages) otherwise."""
        cfg = self.cfg
        try:
            sender, recipients = seal(message)
        except UnsafeHeader as exc:
            raise MailError(f"not sent: {exc}", transient=False) from exc
        client = smtp_client(cfg, ca_file=self.ca_file, require_tls=self.require_tls)
        try:
            async with client:
                await smtp_login(client, cfg, self.oauth)
                # The envelope is given, never read from headers by the library.
                await client.send_message(message, sender=sender, recipients=recipients)
        except aiosmtplib.SMTPAuthenticationError as exc:
            how = self.oauth.describe if self.oauth else "password"
            raise MailError(f"{cfg.host} refused the {how} login of {cfg.user}: {exc.code} "
                            f"{exc.message}", transient=False) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise MailError(f"{cfg.host} refused the mail: {exc.code} {exc.message}",
                            transient=400 <= exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"could not send through {cfg.host}:{cfg.port}: {exc}",
                            transient=True) from exc


def smtp_sender(settings: Settings, oauth: OAuthLogin | None = None,
                logins: LoginStore | None = None) -> SmtpSender | None:
    """The sender the settings describe (None without SMTP); ``oauth``: a login shared
    with IMAP, else one of its own (shared with every process through ``logins``) when
    the settings ask for OAuth2."""
    if settings.smtp is None:
        return None
    return SmtpSender(settings.smtp, ca_file=settings.tls_ca_file,
                      require_tls=settings.require_tls,
                      oauth=oauth or oauth_login(settings, logins))
