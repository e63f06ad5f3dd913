"""Switchboard's own SMTP listener (aiosmtpd), for a domain pointed at Switchboard.

It accepts only recipients Switchboard bridges, enforces a size limit, and answers
with SMTP codes that say why: 550 for an unknown recipient, 552 for a message
over the limit, 451 (try again) when bridging fails for now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.errors import TransientFailure
from bot.lanes import LaneBlocked, Lanes
from bot.mail import Envelope as MailEnvelope
from bot.mail import Peer
from bot.model import Address, AddressError, Refusal
from bridges.email.order import conversation_keys
from bridges.email.poison import aside_key, failure_text, refusal_for

log = logging.getLogger(__name__)

Accepts = Callable[[Address], Awaitable[bool]]
Deliver = Callable[[bytes, MailEnvelope], Awaitable[object]]


class SetAside(Protocol):
    async def set_aside(self, key: str, raw: bytes, refusal: Refusal) -> None: ...


TRY_LATER = "451 4.3.0 Temporarily unable to accept mail here; please try again later"


class BridgeHandler:
    """Every answer is an SMTP code with a plain reason: 4xx whenever trying again may
    work (a store or network outage), never internals such as addresses of servers."""

    def __init__(self, accepts: Accepts, deliver: Deliver, ingest: SetAside,
                 concurrency: int = 32) -> None:
        self.accepts = accepts
        self.deliver = deliver
        self.ingest = ingest
        # Sessions run side by side; the emails of one conversation still go in the order
        # they arrived.
        self.lanes = Lanes(concurrency)

    async def handle_exception(self, error: Exception) -> str:
        log.warning("SMTP session failed: %s", failure_text(error))
        return TRY_LATER

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        try:
            recipient = Address.email(address)
        except AddressError as exc:
            # The reason (a length limit, a bad domain), on one line and bounded.
            return f"553 5.1.3 not a valid mailbox address: {str(exc)[:300]}"
        try:
            accepted = await self.accepts(recipient)
        except Exception as exc:
            log.warning("SMTP recipient check deferred: %s", failure_text(exc))
            return TRY_LATER
        if not accepted:
            return (f"550 5.1.1 <{address}>: no such recipient here; Switchboard accepts "
                    "only its configured addresses")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        recipients = tuple(Address.email(r) for r in envelope.rcpt_tos)
        # What SPF judges: the connecting client, its HELO name and the envelope sender.
        # The null reverse-path (MAIL FROM:<>, a bounce's) is "" here, as everywhere.
        mail_from = (envelope.mail_from or "").strip()
        peer = Peer(ip=str(session.peer[0]) if session.peer else "",
                    helo=session.host_name or "", mail_from="" if mail_from == "<>" else mail_from)
        try:
            await self.lanes.run(conversation_keys(data), lambda: self.deliver(
                data, MailEnvelope("smtp", recipients, peer)))
        except (TransientFailure, LaneBlocked) as exc:
            log.warning("SMTP message deferred: %s", exc)
            return "451 4.3.0 Temporarily unable to bridge this message; please try again later"
        except Exception as exc:
            # Not an outage: the same bytes would fail again. Keep them for the operator.
            log.exception("SMTP message could not be bridged; set aside")
            reason = f"set aside: it could not be bridged ({failure_text(exc)})"
            try:
                await self.ingest.set_aside(f"smtp:{aside_key(data)}", data,
                                            refusal_for(data, "smtp", reason))
            except Exception:
                return TRY_LATER
            return ("554 5.6.0 This message could not be processed and was not delivered; "
                    "it was kept for the administrator")
        return "250 2.0.0 Message accepted for delivery"


async def start_listener(host: str, port: int, handler: BridgeHandler, max_bytes: int,
                         hostname: str) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTP(handler, data_size_limit=max_bytes, hostname=hostname,
                    ident="Switchboard", enable_SMTPUTF8=True, decode_data=False)

    return await loop.create_server(factory, host, port)
