"""Composition root: the one place that picks concrete adapters and stores for the core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bot.audit import AuditedMailer
from bot.commands import CommandContext, Commands
from bot.doctor import Probe
from bot.errors import BridgeError, StoreError
from bot.flows.inbound_email import (
    AttachmentPolicy,
    InboundEmailFlow,
    IngestOutcome,
    Posted,
    Refused,
    TransientFailure,
)
from bot.flows.outgoing import MARKER
from bot.flows.reply_by_email import ReplyByEmail
from bot.flows.reply_in_chat import Policy, ReplyFlow, ReplyInChat
from bot.mail import InboundMail, SenderAuth, SenderTrust
from bot.metering import Charges, Measure, Meter, Service, Usage, customer_of
from bot.model import Address, Network
from bot.permissions import Permissions, thread_rule
from bot.ports import ChatNetwork, Notice
from bot.reports import ChargeReports, ReportError, current_month, parse_period
from bot.settings import Settings
from bridges.email.auth import Peer, SenderAuthenticator, use_dns_server
from bridges.email.imap import ImapIngest, TransientIngestError
from bridges.email.listener import BridgeHandler, start_listener
from bridges.email.mime import parse
from bridges.email.probe import probe_imap, probe_smtp
from bridges.email.smtp import SmtpSender
from bridges.http import HttpServer
from bridges.matrix.client import MatrixNetwork
from bridges.matrix.probe import probe_matrix
from bridges.matrix.sync import CommandEvent, sync_forever
from bridges.metrics import Metrics
from bridges.slack.app import ENDPOINT, SlackApp
from bridges.slack.probe import probe_slack
from bridges.slack.web import SlackNetwork, web_client
from storage.health import probe_redis
from storage.queue import RqScheduler
from storage.store import Store

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 30.0


def doctor_probes() -> list[Probe]:
    return [probe_redis, probe_imap, probe_smtp, probe_slack, probe_matrix]


@dataclass
class Runtime:
    """Everything a Switchboard process holds: settings, store, network adapters, flows."""

    settings: Settings
    store: Store
    networks: dict[Network, ChatNetwork]
    inbound: InboundEmailFlow
    replies: ReplyInChat
    emails: ReplyByEmail
    commands: Commands
    matrix: MatrixNetwork | None = None
    slack: SlackNetwork | None = None
    slack_app: SlackApp | None = None
    ingests: list[ImapIngest] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    scheduler: RqScheduler | None = None
    matrix_synced: bool = False
    authenticator: SenderAuthenticator | None = None  # None: sender checks are off
    meter: Meter = field(default_factory=Meter)
    reports: ChargeReports | None = None
    permissions: Permissions | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        store = Store.open(settings.redis_url, settings.redis_prefix, settings.tls_ca_file)
        networks: dict[Network, ChatNetwork] = {}
        slack = matrix = None
        if settings.slack is not None:
            slack = SlackNetwork(web_client(settings.slack.bot_token, settings.slack.api_url,
                                            settings.tls_ca_file))
            networks[Network.SLACK] = slack
        if settings.matrix is not None:
            matrix = await MatrixNetwork.connect(settings.matrix, store.matrix,
                                                 settings.tls_ca_file)
            networks[Network.MATRIX] = matrix
        own = [a for a in (settings.bot_email, settings.imap.user if settings.imap else None)
               if a]
        mailer = AuditedMailer(SmtpSender(settings.smtp, ca_file=settings.tls_ca_file,
                                          require_tls=settings.require_tls),
                               store.audit, MARKER) if settings.smtp else None
        permissions = Permissions(settings.permissions, store.address_book, store.rates,
                                  store.audit)
        inbound = InboundEmailFlow(
            routes=settings.routes, networks=networks, address_book=store.address_book,
            history=store.history, conversations=store.conversations, ingest=store.ingest,
            tokens=store.tokens, mailer=mailer, bot_email=settings.bot_email or "",
            reply_domain=settings.reply_domain or "", own_addresses=own, rates=store.rates,
            sender_rate=settings.sender_rate, conversation_rate=settings.conversation_rate,
            bounce_rate=settings.bounce_rate,
            attachments=AttachmentPolicy(max_count=settings.max_attachments,
                                         blocked=settings.blocked_attachments))
        policy = Policy(retry_interval=settings.retry_interval,
                        retry_deadline=settings.retry_deadline,
                        unknown_counts_as_present=settings.presence_unknown == "available",
                        reply_token_ttl=settings.reply_token_ttl,
                        bot_email=settings.bot_email or "switchboard@localhost",
                        reply_domain=settings.reply_domain or "localhost")
        metrics = Metrics()
        if settings.meter_memory and not tracemalloc.is_tracing():
            tracemalloc.start()
        meter = Meter(store.usage)
        reports = ChargeReports(usage=store.usage, customers=store.customers, mailer=mailer,
                                card=settings.rate_card, bot_email=settings.bot_email
                                or "switchboard@localhost", public_url=settings.public_url)

        async def usage_view(customer: str) -> tuple[Usage, Charges | None]:
            period = current_month()
            usage = await store.usage.usage(customer, period)
            return usage, (await reports.charges(customer, period)
                           if settings.rate_card else None)

        scheduler = RqScheduler(settings.redis_url, store.keys)
        shared = ReplyFlow(
            networks=networks, address_book=store.address_book, history=store.history,
            deliveries=store.deliveries, conversations=store.conversations,
            tokens=store.tokens, mailer=mailer, policy=policy,
            on_bridged=lambda direction, net: metrics.bridged.labels(direction, net).inc(),
            meter=meter, permissions=permissions)
        replies = ReplyInChat(**vars(shared), scheduler=scheduler)
        inbound.people = replies  # answers to chat-started conversations follow presence
        emails = ReplyByEmail(**vars(shared), scheduler=scheduler)
        commands = Commands(replies=replies, emails=emails, address_book=store.address_book,
                            history=store.history, deliveries=store.deliveries,
                            verifications=store.verifications, mailer=mailer,
                            bot_email=settings.bot_email or "switchboard@localhost",
                            retry_interval=settings.retry_interval, meter=meter,
                            usage=usage_view, permissions=permissions,
                            conversations=store.conversations,
                            thread_replies=thread_rule(
                                {r.room: r.replies for r in settings.routes if r.replies},
                                settings.plain_thread_replies))
        slack_app = None
        if slack is not None and settings.slack is not None:
            slack_app = SlackApp(signing_secret=settings.slack.signing_secret,
                                 client=slack.client, network=slack, replies=replies,
                                 emails=emails, commands=commands,
                                 retry_interval=settings.retry_interval)
        authenticator = None
        if settings.sender_auth == "check":
            if settings.dns_server is not None:
                use_dns_server(*settings.dns_server)
            authenticator = SenderAuthenticator(trusted_hosts=settings.auth_trusted_hosts)
        else:
            log.warning("sender checks are off: every From address is believed")
        return cls(settings, store, networks, inbound, replies, emails, commands, matrix,
                   slack, slack_app, metrics=metrics, scheduler=scheduler,
                   authenticator=authenticator, meter=meter, reports=reports,
                   permissions=permissions)

    async def close(self) -> None:
        if self.matrix is not None:
            await self.matrix.close()
        await self.store.close()

    async def ingest(self, raw: bytes, source: str, envelope: tuple[Address, ...] = (),
                     peer: Peer | None = None) -> IngestOutcome:
        """Parse and bridge one raw email; TransientIngestError means "retry later"."""
        measure = self.meter.start()
        # The sender check waits on DNS in a thread: let it overlap the parsing.
        checking = asyncio.ensure_future(self.authenticator.check(raw, peer)) \
            if self.authenticator is not None else None
        mail = parse(raw, max_attachment_bytes=self.settings.max_attachment_bytes,
                     envelope_recipients=envelope,
                     envelope_sender=peer.mail_from if peer is not None else None)
        auth = await checking if checking is not None else \
            SenderAuth(SenderTrust.UNCHECKED, "sender checks are off")
        mail = replace(mail, auth=auth)
        try:
            outcome = await self.inbound.handle(mail, source)
        except (TransientFailure, StoreError) as exc:
            self.metrics.errors.labels("ingest").inc()
            raise TransientIngestError(str(exc)) from exc
        if isinstance(outcome, Posted):
            await self._meter_ingest(measure, mail, len(raw), outcome)
            for ref in outcome.refs:
                self.metrics.bridged.labels("email_to_chat", ref.network.value).inc()
            lag = time.time() - mail.date
            if 0 <= lag < 86400:
                self.metrics.ingest_lag.observe(lag)
        elif isinstance(outcome, Refused):
            self.metrics.refused.inc()
        return outcome

    async def customer_of_network(self, network: Network) -> str | None:
        """The customer this process serves on ``network``: its Slack workspace, its
        Matrix homeserver's organisation."""
        if network is Network.SLACK and self.slack is not None:
            try:
                return f"slack:{await self.slack.team()}"
            except BridgeError as exc:
                log.error("cannot tell which Slack workspace this is: %s", exc)
                return None
        if network is Network.MATRIX and self.settings.matrix is not None:
            return customer_of(Address.matrix(self.settings.matrix.user))
        return None

    async def _meter_ingest(self, measure: Measure, mail: InboundMail, size: int,
                            outcome: Posted) -> None:
        """One email ingested per customer it reached, one chat post per post made."""
        card = len(mail.body.encode()) + sum(a.size for a in mail.attachments if a.content)
        stored = len(mail.body.encode()) + len(mail.quoted.encode()) + len(mail.subject.encode())
        by_customer: dict[str, list[str]] = {}
        for ref in outcome.refs:
            customer = await self.customer_of_network(ref.network)
            if customer is not None:
                by_customer.setdefault(customer, []).append(ref.network.value)
        txs = []
        for customer, networks in by_customer.items():
            txs += [self.meter.transaction(self.meter.start(), Service.CHAT_POST, customer,
                                           bytes_out=card, network=network)
                    for network in networks]
            txs.append(self.meter.transaction(
                measure, Service.EMAIL_INGESTED, customer, bytes_in=size, bytes_stored=stored,
                attachments=str(len(mail.attachments)), sender_auth=mail.auth.trust.value))
        await self.meter.record(*txs)  # one round trip for all of them

    async def report_page(self, params: Mapping[str, str], query: Mapping[str, str]
                          ) -> tuple[int, str]:
        """A customer's charge report page (GET /reports/{token}?period=YYYY-MM)."""
        assert self.reports is not None
        try:
            period = parse_period(query.get("period") or current_month())
        except ReportError as exc:
            return 400, str(exc)
        try:
            html = await self.reports.page(params["token"], period)
        except ReportError as exc:
            return 503, str(exc)
        return (404, "no such report") if html is None else (200, html)

    async def retry(self, delivery_id: str) -> str:
        """The retry job: a queued chat delivery or a queued email, by what it is."""
        delivery = await self.store.deliveries.get(delivery_id)
        if delivery is not None and delivery.meta.get("by") == "email":
            return type(await self.emails.retry(delivery_id)).__name__
        return type(await self.replies.retry(delivery_id)).__name__

    async def _matrix_command(self, event: CommandEvent) -> Notice | None:
        shows = None
        if event.where.thread:
            shows = await self.store.conversations.shown_in(Network.MATRIX, event.where.room,
                                                            event.where.thread)
        elif not event.plain and event.where.room == await self.store.matrix.dm_room(
                event.sender.value):
            # In the direct chat with the bot, outside a thread, a command is about the
            # latest message Switchboard delivered there (the reply it answers back).
            shows = await self.store.conversations.latest_in(Network.MATRIX, event.where.room)
        ctx = CommandContext(user=event.sender, user_name=event.sender_name, where=event.where,
                             shows=shows, request=f"matrix:{event.event_id}")
        if event.plain:
            return await self.commands.run_plain(event.text, ctx)
        return await self.commands.run(event.text, ctx)

    async def _deliver_imap(self, raw: bytes, source: str) -> None:
        await self.ingest(raw, source)

    async def _deliver_smtp(self, raw: bytes, recipients: tuple[Address, ...],
                            peer: Peer) -> None:
        await self.ingest(raw, "smtp", recipients, peer)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run every loop this process is configured for until ``stop`` is set."""
        s = self.settings
        tasks: list[asyncio.Task[None]] = []
        if s.imap is not None:
            for mailbox in s.imap.mailboxes:
                ingest = ImapIngest(s.imap, mailbox, self._deliver_imap, self.store.ingest,
                                    ca_file=s.tls_ca_file, require_tls=s.require_tls)
                self.ingests.append(ingest)
                tasks.append(asyncio.create_task(ingest.run(stop), name=f"imap {mailbox}"))
        if self.matrix is not None:
            tasks.append(asyncio.create_task(
                sync_forever(self.matrix, stop, self._matrix_command,
                             self.permissions.may_invite if self.permissions else None),
                name="matrix"))
        listener = None
        if s.smtp_listen is not None:
            handler = BridgeHandler(self.inbound.accepts, self._deliver_smtp,
                                    self.store.ingest)
            listener = await start_listener(*s.smtp_listen, handler, s.smtp_listen_max_bytes,
                                            s.reply_domain or "switchboard")
            log.info("SMTP listener on %s:%d", *s.smtp_listen)
        http = HttpServer(*s.http_listen, readiness=self.readiness, metrics=self.scrape)
        if self.slack_app is not None:
            http.route("POST", ENDPOINT, self.slack_app.handle)
        http.page("/reports/{token}", self.report_page)
        await http.start()
        log.info("Switchboard is running (HTTP on %s:%d)", *s.http_listen)
        await stop.wait()
        log.info("stopping: no new work is taken; in-flight work is finished")
        if listener is not None:
            listener.close()
            await listener.wait_closed()
        await http.stop()
        # Slack's listeners run after their ack, outside the request: wait for them too.
        if self.slack_app is not None:
            await self.slack_app.drain(SHUTDOWN_GRACE)
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(task, 15)
        log.info("stopped")

    async def readiness(self) -> dict[str, bool]:
        checks = {"redis": True}
        try:
            await self.store.redis.ping()
        except Exception:
            checks["redis"] = False
        if self.ingests:
            checks["imap"] = all(i.connected for i in self.ingests)
        if self.matrix is not None:
            checks["matrix"] = self.matrix.client.logged_in
        return checks

    async def scrape(self) -> bytes:
        """The Prometheus exposition, with the gauges read from Redis now."""
        try:
            for state, count in (await self.store.deliveries.count_by_state()).items():
                self.metrics.deliveries.labels(state.value).set(count)
            if self.scheduler is not None:
                self.metrics.queue_depth.set(await self.scheduler.depth())
        except Exception:
            self.metrics.errors.labels("metrics").inc()
        return self.metrics.render()
