"""Composition root: the one place that picks concrete adapters and stores for the core."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.attachments import AttachmentPolicy
from bot.audit import AuditedMailer
from bot.blocks import BlockList
from bot.commands import Commands
from bot.doctor import PROBE_TIMEOUT, Check, Probe, in_time
from bot.errors import BridgeError, StoreError
from bot.flows.delivery import Lifecycle, Policy
from bot.flows.inbound_email import InboundEmailFlow
from bot.flows.outgoing import MARKER
from bot.flows.reply_by_email import ReplyByEmail
from bot.flows.reply_in_chat import ReplyInChat
from bot.metering import Charges, Meter, Usage
from bot.model import Address, ChatTarget, Network
from bot.permissions import Permissions
from bot.ports import ChatNetwork
from bot.reports import ChargeReports, current_month
from bot.retention import expire_history
from bot.review import Review, RoomAdmins
from bot.room_commands import RoomCommands
from bot.routes import OWN_PREFIXES, RouteBook
from bot.search import Search
from bot.settings import Settings
from bot.stores import Beat
from bridges.email.auth import SenderAuthenticator, use_dns_server
from bridges.email.imap import ImapIngest
from bridges.email.listener import BridgeHandler, start_listener
from bridges.email.mime import MimeReader
from bridges.email.oauth import OAuthLogin, mailbox_login, oauth_login
from bridges.email.probe import probe_imap, probe_smtp
from bridges.email.smtp import smtp_sender
from bridges.http import HttpServer
from bridges.matrix.appservice import AppServiceApi
from bridges.matrix.client import MatrixNetwork
from bridges.matrix.commands import MatrixCommands
from bridges.matrix.ghosts import Ghosts
from bridges.matrix.listener import Listener
from bridges.matrix.probe import probe_matrix
from bridges.matrix.sync import sync_forever
from bridges.metrics import Metrics
from bridges.slack.app import OAuthSetup, SlackApp
from bridges.slack.installs import InstallationStore, StateStore
from bridges.slack.manifest import ENDPOINT, INSTALL_PATH, REDIRECT_PATH
from bridges.slack.probe import probe_slack
from bridges.slack.socket import SocketMode
from bridges.slack.web import SlackNetwork, web_client
from storage.health import probe_redis
from storage.queue import RqScheduler
from storage.store import Store

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 30.0
RETENTION_EVERY = 3600.0  # seconds between two passes of history retention
KEYS_LEASE_TTL = 60.0  # seconds a process's hold on the Matrix keys lasts unrenewed
KEYS_RETRY = 5.0  # seconds between a waiting process's tries to take the keys over
BEAT_INTERVAL = 5.0  # seconds between two health reports of a process
BEAT_TTL = 20  # seconds a health report counts (a process silent longer is gone)
WAITS_WINDOW = 600.0  # seconds of rate-limit waits a health report sums


def keys_lease(user: str) -> str:
    return f"matrix-keys:{user}"


def owned_by(routes: RouteBook, own: Sequence[str], reply_domain: str | None
             ) -> Callable[[str], bool]:
    """Whether an address is Switchboard's: its From and mailboxes, a routed address
    (catch-alls and plus-addresses included), a reply or return address."""
    mine = {a.lower() for a in own}

    def ours(address: str) -> bool:
        local, _, domain = address.lower().rpartition("@")
        return address.lower() in mine or routes.get(address.lower()) is not None or (
            domain == reply_domain and local.startswith(OWN_PREFIXES))
    return ours


def searched_rooms(routes: RouteBook, review_room: ChatTarget | None) -> list[ChatTarget]:
    """The rooms a search may find posts in: every route's, and the review room."""
    return [*(r.target for r in routes.all()), *((review_room,) if review_room else ())]


def doctor_probes() -> list[Probe]:
    from bot.runtime.matrix_keys import probe_matrix_keys

    return [probe_redis, probe_mail, probe_slack, probe_matrix, probe_matrix_keys]


async def probe_mail(settings: Settings) -> list[Check]:
    """IMAP and SMTP with one OAuth2 login, the one `switchboard run` shares through the
    store: a running deployment's token is used, or one fetched for all (never two
    refreshes racing for a refresh token the provider rotates)."""
    store = Store.open(settings.redis, settings.redis_prefix)
    try:
        oauth = oauth_login(settings, store.logins)
        # Side by side, each in its own time (a slow login on one delays not the other);
        # the login's own lock still makes it one token fetch.
        imap, smtp = await asyncio.gather(
            in_time("imap", probe_imap(settings, oauth, store.logins), PROBE_TIMEOUT - 1),
            in_time("smtp", probe_smtp(settings, oauth), PROBE_TIMEOUT - 1))
        return [*imap, *smtp]
    finally:
        await store.close()


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
    socket: SocketMode | None = None
    oauth: OAuthLogin | None = None  # the mailbox's OAuth2 login, shared by IMAP and SMTP
    keys_holder: str | None = None  # this process's hold on the Matrix keys (a lease)
    _hearing: Listener | None = None  # what hears the current Matrix connection

    @classmethod
    async def start(cls, settings: Settings, *, holds_matrix_keys: bool = True) -> Runtime:
        """Everything wired. ``holds_matrix_keys``: this process may open the Matrix bot's
        key store, if no other process holds it (a lease in Redis): the holder runs the
        sync loop; the others hand their encrypted posts over to it."""
        store = Store.open(settings.redis, settings.redis_prefix)
        networks: dict[Network, ChatNetwork] = {}
        slack = matrix = None
        installs = None
        keys_holder = None
        if settings.slack is not None:
            installs = InstallationStore(store.workspaces, settings.slack.install_teams) \
                if settings.slack.installs else None
            slack = SlackNetwork(web_client(settings.slack.bot_token, settings.slack.api_url,
                                            settings.tls_ca_file),
                                 tokens=installs.bot_token if installs else None,
                                 pacer=store.pacer,
                                 post_interval=settings.slack.post_interval)
            networks[Network.SLACK] = slack
        if settings.matrix is not None:
            holds = holds_matrix_keys
            if holds and settings.matrix.key_store:
                keys_holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
                holds = await store.ingest.take_lease(keys_lease(settings.matrix.user),
                                                      keys_holder, KEYS_LEASE_TTL)
                if not holds:
                    keys_holder = None
                    log.info("another `switchboard run` holds the Matrix bot's keys: this one "
                             "leaves the Matrix sync to it and hands encrypted posts over")
            try:
                matrix = await MatrixNetwork.connect(settings.matrix, store.matrix,
                                                     settings.tls_ca_file, holds_keys=holds,
                                                     appservice=store.appservice)
            except BaseException:
                if keys_holder is not None:  # the keys are free for the next start
                    await store.ingest.release_lease(keys_lease(settings.matrix.user),
                                                     keys_holder)
                await store.close()
                raise
            networks[Network.MATRIX] = matrix
        own = [a for a in (settings.bot_email,
                           *(m.imap.user for m in settings.mailboxes),
                           *(m.address for m in settings.mailboxes)) if a]
        oauth = oauth_login(settings, store.logins)
        sender = smtp_sender(settings, oauth)
        mailer = AuditedMailer(sender, store.audit, MARKER) if sender else None
        permissions = Permissions(settings.permissions, store.address_book, store.rates,
                                  store.audit)
        metrics = Metrics()
        if settings.meter_memory and not tracemalloc.is_tracing():
            tracemalloc.start()
        meter = Meter(store.usage)
        authenticator = None
        if settings.sender_auth == "check":
            if settings.dns_server is not None:
                use_dns_server(*settings.dns_server)
            authenticator = SenderAuthenticator(trusted_hosts=settings.auth_trusted_hosts)
        else:
            log.warning("sender checks are off: every From address is believed")
        routes = RouteBook(settings.routes, store.routes, settings.receive_domains)
        blocks = BlockList(store.blocks)
        try:
            await routes.refresh(force=True)
        except StoreError as exc:  # mail waits for Redis anyway; the routes follow it back
            log.warning("the routes added from chat are not read yet: %s", exc)
        try:
            await blocks.refresh(force=True)
        except StoreError as exc:
            log.warning("the blocked senders are not read yet: %s", exc)
        inbound = InboundEmailFlow(
            routes=routes, networks=networks, address_book=store.address_book,
            history=store.history, conversations=store.conversations, ingest=store.ingest,
            tokens=store.tokens, mailer=mailer, bot_email=settings.bot_email or "",
            reply_domain=settings.reply_domain or "", own_addresses=own, rates=store.rates,
            sender_rate=settings.sender_rate, conversation_rate=settings.conversation_rate,
            bounce_rate=settings.bounce_rate,
            attachments=AttachmentPolicy(max_count=settings.max_attachments,
                                         blocked=settings.blocked_attachments),
            reader=MimeReader(settings.max_attachment_bytes), checks=authenticator,
            meter=meter, observer=metrics, arrivals=store.arrivals, blocks=blocks,
            autoreply_every=settings.autoreply_every, reply_token_ttl=settings.reply_token_ttl)
        policy = Policy(retry_interval=settings.retry_interval,
                        retry_deadline=settings.retry_deadline,
                        unknown_counts_as_present=settings.presence_unknown == "available",
                        reply_token_ttl=settings.reply_token_ttl,
                        bot_email=settings.bot_email or "switchboard@localhost",
                        reply_domain=settings.reply_domain or "localhost")
        reports = ChargeReports(usage=store.usage, customers=store.customers, mailer=mailer,
                                card=settings.rate_card, bot_email=settings.bot_email
                                or "switchboard@localhost", public_url=settings.public_url)

        async def usage_view(customer: str) -> tuple[Usage, Charges | None]:
            period = current_month()
            usage = await store.usage.usage(customer, period)
            return usage, (await reports.charges(customer, period)
                           if settings.rate_card else None)

        scheduler = RqScheduler(settings.redis, store.keys)
        shared = Lifecycle(
            networks=networks, address_book=store.address_book, history=store.history,
            deliveries=store.deliveries, conversations=store.conversations,
            tokens=store.tokens, mailer=mailer, policy=policy, observer=metrics,
            scheduler=scheduler, meter=meter, permissions=permissions)
        replies = ReplyInChat(**vars(shared))
        inbound.people = replies  # answers to chat-started conversations follow presence
        admins = RoomAdmins(networks, permissions)
        review = Review(store.held, routes, admins, store.audit, store.rates,
                        release=inbound.post_held)
        inbound.review = review
        if settings.review_room is not None:
            inbound.review_room = ChatTarget(Network(settings.review_room[0]),
                                             room=settings.review_room[1])
        rooms = RoomCommands(routes, admins, review, store.conversations, store.history,
                             store.deliveries, store.beats, store.audit, blocks)
        replies_in = routes.replies_rule(settings.plain_thread_replies)
        emails = ReplyByEmail(**vars(shared), ours=owned_by(routes, own, settings.reply_domain))
        commands = Commands(replies=replies, emails=emails, address_book=store.address_book,
                            history=store.history, deliveries=store.deliveries,
                            verifications=store.verifications, mailer=mailer,
                            bot_email=settings.bot_email or "switchboard@localhost",
                            retry_interval=settings.retry_interval, meter=meter,
                            usage=usage_view, permissions=permissions,
                            conversations=store.conversations,
                            thread_replies=lambda where: replies_in(where.room),
                            rooms=rooms, search=Search(
                                store.search, store.address_book, networks,
                                rooms=lambda: searched_rooms(routes, inbound.review_room),
                                is_admin=permissions.is_admin,
                                threads=store.conversations.threads))
        slack_app = None
        if slack is not None and settings.slack is not None:
            cfg = settings.slack
            installing = None
            if installs is not None and cfg.client_id and cfg.client_secret:
                installing = OAuthSetup(cfg.client_id, cfg.client_secret,
                                        f"{settings.public_url.rstrip('/')}{REDIRECT_PATH}",
                                        cfg.authorize_url, installs,
                                        StateStore(store.workspaces))
            slack_app = SlackApp(signing_secret=cfg.signing_secret, client=slack.client,
                                 network=slack, replies=replies, emails=emails,
                                 commands=commands, retry_interval=settings.retry_interval,
                                 oauth=installing)
        return cls(settings, store, networks, inbound, replies, emails, commands, matrix,
                   slack, slack_app, metrics=metrics, scheduler=scheduler,
                   authenticator=authenticator, meter=meter, reports=reports,
                   permissions=permissions, oauth=oauth, keys_holder=keys_holder)

    async def close(self) -> None:
        if self.matrix is not None:
            await self.matrix.close()
        if self.keys_holder is not None and self.settings.matrix is not None:
            with contextlib.suppress(StoreError):
                await self.store.ingest.release_lease(keys_lease(self.settings.matrix.user),
                                                      self.keys_holder)
        if self.slack is not None:
            await self.slack.close()
        await self.store.close()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run every loop this process is configured for until ``stop`` is set."""
        s = self.settings
        tasks: list[asyncio.Task[None]] = []
        for box in s.mailboxes:
            # Each account logs in its own way; the environment form's grant is the one
            # SMTP shares.
            login = mailbox_login(s, box, self.store.logins) if box.own_login else self.oauth
            for folder in box.imap.mailboxes:
                ingest = ImapIngest(box.imap, folder, self.inbound.receive, self.store.ingest,
                                    ca_file=s.tls_ca_file, require_tls=s.require_tls,
                                    concurrency=s.ingest_concurrency, oauth=login,
                                    name=box.name, address=Address.email(box.address)
                                    if box.address else None)
                self.ingests.append(ingest)
                tasks.append(asyncio.create_task(ingest.run(stop),
                                                 name=f"imap {ingest.name}"))
        if self.matrix is not None:
            tasks.append(asyncio.create_task(self._matrix_loops(stop), name="matrix"))
        tasks.append(asyncio.create_task(self.inbound.routes.follow(stop), name="routes"))
        tasks.append(asyncio.create_task(self.inbound.blocks.follow(stop), name="blocks"))
        tasks.append(asyncio.create_task(self._beat(stop), name="health beat"))
        if s.history_retention_days:
            tasks.append(asyncio.create_task(
                self._keep_history(stop, s.history_retention_days), name="retention"))
        listener = None
        if s.smtp_listen is not None:
            handler = BridgeHandler(self.inbound.accepts, self.inbound.receive,
                                    self.store.ingest, s.ingest_concurrency)
            listener = await start_listener(*s.smtp_listen, handler, s.smtp_listen_max_bytes,
                                            s.reply_domain or "switchboard")
            log.info("SMTP listener on %s:%d", *s.smtp_listen)
        http = HttpServer(*s.http_listen, readiness=self.readiness,
                          metrics=lambda: self.metrics.scrape(
                              self.store.deliveries, self.scheduler, self.post_waits(),
                              {i.name: i.connected for i in self.ingests if not i.standing_by}))
        if self.slack_app is not None and s.slack is not None:
            if s.slack.app_token is not None:
                self.socket = SocketMode(self.slack_app, s.slack.app_token,
                                         self.store.workspaces.first_time,
                                         s.slack.ping_interval)
                tasks.append(asyncio.create_task(self.socket.run(stop), name="slack socket"))
            else:
                http.route("POST", ENDPOINT, self.slack_app.handle)
            if s.slack.installs:
                http.route("GET", INSTALL_PATH, self.slack_app.install)
                http.route("GET", REDIRECT_PATH, self.slack_app.install)
        if self.reports is not None:
            http.page("/reports/{token}", self.reports.web_page)
        if self.matrix is not None and self.matrix.ghosts is not None:
            pushed = AppServiceApi(self.matrix.ghosts.registration, self.store.appservice,
                                   self._listener)
            for method, path, answer in pushed.routes():
                http.route(method, path, answer)
        await http.start()
        log.info("Switchboard is running (HTTP on %s:%d)", *s.http_listen)
        if self.matrix is not None and self.matrix.ghosts is not None:
            await self._reach_homeserver(self.matrix.ghosts)
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

    async def _matrix_loops(self, stop: asyncio.Event) -> None:
        """With encryption, only the process holding the bot's keys syncs; another waits
        for the keys to be free (the holder stopped, or crashed and its lease ran out) and
        then takes them, and the sync, over."""
        s = self.settings
        assert self.matrix is not None and s.matrix is not None
        if s.matrix.appservice:
            return  # the homeserver pushes every event: nothing to sync
        if self.matrix.encrypting or not s.matrix.key_store:
            await self._sync_loops(stop)
            return
        name = keys_lease(s.matrix.user)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KEYS_RETRY)
            if stop.is_set():
                return
            holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
            try:
                if not await self.store.ingest.take_lease(name, holder, KEYS_LEASE_TTL):
                    continue
            except StoreError:
                continue
            try:
                taken = await MatrixNetwork.connect(s.matrix, self.store.matrix, s.tls_ca_file,
                                                    appservice=self.store.appservice)
            except BridgeError as exc:
                log.error("the Matrix keys are free but could not be taken over: %s", exc)
                with contextlib.suppress(StoreError):
                    await self.store.ingest.release_lease(name, holder)
                continue
            previous, self.matrix, self.keys_holder = self.matrix, taken, holder
            self.networks[Network.MATRIX] = taken  # the flows share this mapping
            await previous.close()
            log.info("this process took the Matrix bot's keys and sync over")
            await self._sync_loops(stop)
            return

    @staticmethod
    async def _reach_homeserver(ghosts: Ghosts) -> None:
        """The homeserver told the application service is up: what it held back while
        Switchboard was away comes now, not after its back-off (up to minutes)."""
        try:
            took = await ghosts.ping()
            log.info("the homeserver reaches this application service (%.0f ms)", took)
        except BridgeError as exc:
            log.error("%s: the registration's url must be where the homeserver reaches "
                      "SWITCHBOARD_HTTP_LISTEN; until it can, nothing said on Matrix is "
                      "heard", exc)

    def _listener(self) -> Listener:
        """What hears Matrix for the current connection (one per connection: a process
        that takes the bot's keys over has a new one)."""
        assert self.matrix is not None
        if self._hearing is None or self._hearing.matrix is not self.matrix:
            self._hearing = Listener(self.matrix,
                                     MatrixCommands(self.commands, self.store.conversations,
                                                    self.store.matrix),
                                     self.permissions.may_invite if self.permissions else None,
                                     self._first_unreadable)
        return self._hearing

    async def _sync_loops(self, stop: asyncio.Event) -> None:
        assert self.matrix is not None and self.settings.matrix is not None
        loops = [sync_forever(self.matrix, stop, self._listener())]
        if self.matrix.encrypting:
            loops.append(self.matrix.serve_handed(stop))
        if self.keys_holder is not None:
            loops.append(self._hold_keys(stop))
        await asyncio.gather(*loops)

    async def _hold_keys(self, stop: asyncio.Event) -> None:
        """Keep the lease on the Matrix keys while serving. Lost (Redis unreachable for
        longer than the lease, or this process frozen), another process may take the keys
        over: this one stops using them, as the store must never have two writers."""
        assert self.settings.matrix is not None and self.keys_holder is not None
        name = keys_lease(self.settings.matrix.user)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KEYS_LEASE_TTL / 3)
            if stop.is_set():
                return
            try:
                held = await self.store.ingest.take_lease(name, self.keys_holder, KEYS_LEASE_TTL)
            except StoreError as exc:
                log.warning("could not renew the Matrix key lease (%s)", exc)
                continue
            if not held:
                log.error("the Matrix key lease passed to another process: this one stops "
                          "using the bot's keys; restart it")
                if self.matrix is not None:
                    await self.matrix.close()
                return

    async def _keep_history(self, stop: asyncio.Event, days: int) -> None:
        """History past its retention age goes: at start, then every hour."""
        while not stop.is_set():
            try:
                removed = await expire_history(self.store.erasure, days)
                if removed:
                    log.info("retention: %d history entries older than %d days removed",
                             removed, days)
            except StoreError as exc:
                log.warning("retention could not run (%s); again in an hour", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETENTION_EVERY)

    async def _first_unreadable(self, sender: str) -> bool:
        """Tell a sender the bot could not read their message once a day, not each time."""
        return await self.store.rates.hit(f"matrix-unreadable:{sender}", 1, 86400)

    async def _beat(self, stop: asyncio.Event) -> None:
        """Tell the store, every few seconds, how this process's links are (what `status`
        shows in chat, whichever process answers it)."""
        process = f"{socket.gethostname()}:{os.getpid()}"
        # (when, the waits so far): the waits of the last WAITS_WINDOW are the difference
        seen: collections.deque[tuple[float, dict[str, float]]] = collections.deque()
        while not stop.is_set():
            checks = await self.readiness()
            for ingest in self.ingests:
                if ingest.standing_by:  # the one reading it (or failing to) says
                    checks.pop(f"mailbox {ingest.name}", None)
            now, waits = time.time(), self.post_waits()
            seen.append((now, waits))
            while seen[0][0] < now - WAITS_WINDOW:
                seen.popleft()
            lately = {net: round(total - seen[0][1].get(net, 0.0), 1)
                      for net, total in waits.items()}
            try:
                await self.store.beats.beat(process, Beat(now, checks, lately), BEAT_TTL)
            except StoreError as exc:
                log.warning("could not record this process's health: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BEAT_INTERVAL)

    def post_waits(self) -> dict[str, float]:
        """Seconds this process's posts waited for each network's rate limits."""
        waits = {}
        if self.slack is not None:
            waits["slack"] = self.slack.throttled_seconds
        if self.matrix is not None:
            waits["matrix"] = self.matrix.throttled_seconds
        return waits

    async def readiness(self) -> dict[str, bool]:
        checks = {"redis": True}
        try:
            await self.store.redis.ping()
        except Exception:
            checks["redis"] = False
        for ingest in self.ingests:
            # A process waiting for a mailbox another one reads is ready all the same.
            checks[f"mailbox {ingest.name}"] = ingest.connected or ingest.standing_by
        if self.matrix is not None:
            checks["matrix"] = self.matrix.client.logged_in
        if self.socket is not None:
            checks["slack_socket"] = self.socket.connected
        return checks
