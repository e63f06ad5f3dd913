"""Sending mail over SMTP submission (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from bot.settings import SmtpSettings, TlsMode
from bridges.errors import MailError


class SmtpSender:
    def __init__(self, cfg: SmtpSettings) -> None:
        self.cfg = cfg

    async def send(self, message: EmailMessage) -> None:
        """Submit ``message``; MailError (``transient`` for 4xx and outages) otherwise."""
        cfg = self.cfg
        try:
            await aiosmtplib.send(
                message, hostname=cfg.host, port=cfg.port, username=cfg.user,
                password=cfg.password, use_tls=cfg.tls is TlsMode.IMPLICIT,
                start_tls=True if cfg.tls is TlsMode.STARTTLS else (
                    None if cfg.tls is TlsMode.AUTO else False),
                timeout=30)
        except aiosmtplib.SMTPResponseException as exc:
            raise MailError(f"{cfg.host} refused the mail: {exc.code} {exc.message}",
                            transient=400 <= exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"could not send through {cfg.host}:{cfg.port}: {exc}",
                            transient=True) from exc
