"""Sending mail over SMTP submission (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from bot.headers import UnsafeHeader, seal
from bot.settings import SmtpSettings
from bridges.email.connect import smtp_client
from bridges.errors import MailError


class SmtpSender:
    def __init__(self, cfg: SmtpSettings, *, ca_file: str | None = None,
                 require_tls: bool = False) -> None:
        self.cfg = cfg
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
                # The envelope is given, never read from headers by the library.
                await client.send_message(message, sender=sender, recipients=recipients)
        except aiosmtplib.SMTPResponseException as exc:
            raise MailError(f"{cfg.host} refused the mail: {exc.code} {exc.message}",
                            transient=400 <= exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"could not send through {cfg.host}:{cfg.port}: {exc}",
                            transient=True) from exc
