"""IMAP ingest: catch up from a checkpoint, then IDLE, forever, with reconnects.

A mailbox is read by one process at a time (a Redis lease). Messages are fetched
in UID order and handed to ``deliver``; the checkpoint (UIDVALIDITY and last UID)
moves only past messages whose delivery finished, so a crash re-reads, and the
de-duplication downstream makes the re-read harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial

import aioimaplib

from bot.errors import StoreError, TransientFailure
from bot.lanes import LaneBlocked, Lanes
from bot.mail import Envelope
from bot.model import Address
from bot.settings import ImapSettings
from bot.stores import Checkpoint, MailboxState
from bridges.email.connect import imap_connect, imap_login
from bridges.email.oauth import OAuthLogin
from bridges.email.order import conversation_keys
from bridges.email.poison import MAX_FAILURES, failure_text, refusal_for
from bridges.errors import MailError

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, Envelope], Awaitable[object]]

BATCH = 50
IDLE_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
LEASE_TTL = 15.0
BACKOFF_MAX = 30.0
# A session that lasted this long was healthy: the drop that ended it is a fresh fault,
# waited for from the start of the backoff, not the tenth of a series.
HEALTHY_SESSION = 60.0
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_UID = re.compile(rb"\(UID (\d+) ")


class ImapIngest:
    def __init__(self, cfg: ImapSettings, mailbox: str, deliver: Deliver, ingest: MailboxState,
                 *, holder: str | None = None, ca_file: str | None = None,
                 require_tls: bool = False, concurrency: int = 32,
                 oauth: OAuthLogin | None = None, name: str = "",
                 address: Address | None = None) -> None:
        self.concurrency = concurrency
        # How status and metrics call it: the account's name, and the folder when it is
        # not the inbox.
        self.name = (name or cfg.user) + ("" if mailbox.upper() == "INBOX" else f"/{mailbox}")
        # Mail in this mailbox was delivered to this address (the envelope recipient a
        # mailbox of its own stands for), whatever its To says.
        self.address = address
        self.oauth = oauth
        self.cfg = cfg
        self.ca_file = ca_file
        self.require_tls = require_tls
        self.mailbox = mailbox
        self.deliver = deliver
        self.ingest = ingest
        self.account = f"{cfg.user}@{cfg.host}"
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.lease_name = f"imap:{self.account}:{mailbox}"
        self.caught_up = asyncio.Event()  # set after each catch-up, for readiness and tests
        self.connected = False
        self.standing_by = False  # another process holds the mailbox's lease
        self.sessions = 0  # how many IMAP sessions were opened (reconnects show here)
        self.healthy_after = HEALTHY_SESSION
        self.backoff = 1.0  # the wait before the next reconnect
        self._connected_at: float | None = None
        self._lost = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._connected_at = None
            try:
                if not await self.ingest.take_lease(self.lease_name, self.holder, LEASE_TTL):
                    self.standing_by = True
                    await _wait(stop, LEASE_TTL / 3)
                    continue
                self.standing_by = False
                await self._session(stop)
                self.backoff = 1.0
            except (OSError, TimeoutError, aioimaplib.AioImapException, MailError,
                    TransientFailure) as exc:
                self._after_session()
                log.warning("IMAP %s/%s: %s; reconnecting in %.0f s", self.account,
                            self.mailbox, exc, self.backoff)
            except Exception:
                # Store outages and the like: never let the loop die.
                self._after_session()
                log.exception("IMAP %s/%s failed; reconnecting in %.0f s", self.account,
                              self.mailbox, self.backoff)
            finally:
                self.connected = False
            await _wait(stop, self.backoff)
            self.backoff = min(BACKOFF_MAX, self.backoff * 2)
        try:
            await self.ingest.release_lease(self.lease_name, self.holder)
        except StoreError as exc:
            # A stop never fails on it: the lease runs out on its own (LEASE_TTL).
            log.warning("the mailbox lease was not released (%s); it expires in %.0f s",
                        exc, LEASE_TTL)

    def _after_session(self) -> None:
        """A session that lived starts the backoff over."""
        if self._connected_at is not None \
                and time.monotonic() - self._connected_at >= self.healthy_after:
            self.backoff = 1.0

    async def _connect(self) -> aioimaplib.IMAP4:
        cfg = self.cfg
        self._lost.clear()

        def lost(_: Exception | None) -> None:
            self._lost.set()

        client, _ = await imap_connect(cfg, ca_file=self.ca_file, require_tls=self.require_tls,
                                       lost=lost)
        await imap_login(client, cfg, self.oauth)
        return client

    async def _session(self, stop: asyncio.Event) -> None:
        client = await self._connect()
        renew = asyncio.create_task(self._keep_lease(stop))
        try:
            selected = await client.select(self.mailbox)
            if selected.result != "OK":
                raise MailError(f"mailbox {self.mailbox!r} cannot be opened")
            uidvalidity = _uidvalidity(selected.lines)
            self.connected = True
            self._connected_at = time.monotonic()
            self.sessions += 1
            while not stop.is_set():
                if renew.done():
                    raise MailError("lost the mailbox lease to another process")
                # Mail that came while the catch-up worked was announced then, between
                # commands, and IDLE will not announce it again: catch up until nothing is
                # new, and only then wait.
                while await self._catch_up(client, uidvalidity, stop) and not stop.is_set():
                    pass
                self.caught_up.set()
                await self._idle(client, stop)
        finally:
            renew.cancel()
            with contextlib.suppress(OSError, TimeoutError, aioimaplib.AioImapException):
                await asyncio.wait_for(client.logout(), 5)

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait(stop, LEASE_TTL / 3)
            if not await self.ingest.take_lease(self.lease_name, self.holder, LEASE_TTL):
                return

    async def _catch_up(self, client: aioimaplib.IMAP4, uidvalidity: int,
                        stop: asyncio.Event) -> int:
        """Bridge what arrived since the checkpoint. Emails of different conversations
        are bridged side by side (at most ``concurrency`` at a time), those of one
        conversation in UID order. The checkpoint moves only past a run of UIDs that are
        all done, so a crash or a failure re-reads whatever was not (the de-duplication
        downstream makes a re-read harmless). A stop takes effect between two messages:
        those in hand are finished and checkpointed, no new one is started. How many
        new messages there were."""
        saved = await self.ingest.checkpoint(self.account, self.mailbox)
        last = saved.last_uid if saved and saved.uidvalidity == uidvalidity else 0
        if saved and saved.uidvalidity != uidvalidity:
            log.warning("UIDVALIDITY of %s changed; re-reading it (duplicates are dropped)",
                        self.mailbox)
        found = await client.uid_search(f"UID {last + 1}:*")
        if found.result != "OK":
            raise MailError(f"searching {self.mailbox} failed")
        uids = sorted(int(u) for line in found.lines[:-1] for u in line.split() if u.isdigit())
        uids = [u for u in uids if u > last]
        progress = _Progress(last)
        lanes = Lanes(self.concurrency)
        failures: list[BaseException] = []
        try:
            for start in range(0, len(uids), BATCH):
                chunk = uids[start:start + BATCH]
                messages = await self._fetch(client, chunk)
                for uid in chunk:
                    if stop.is_set() or failures:
                        break
                    raw = messages.get(uid)
                    if raw is None:  # expunged meanwhile: nothing to do
                        progress.done(uid)
                        continue
                    task = await lanes.submit_unless(stop, conversation_keys(raw), partial(
                        self._deliver_one, raw, uidvalidity, uid))
                    if task is None:
                        break  # stopped while waiting for a free lane
                    progress.started(uid)
                    task.add_done_callback(partial(self._settled, progress, failures, uid))
                if stop.is_set() or failures:
                    break
                await self._save(uidvalidity, progress)
        finally:
            await progress.idle()
            await self._save(uidvalidity, progress)
        if failures:
            raise failures[0]
        return len(uids)

    @staticmethod
    def _settled(progress: _Progress, failures: list[BaseException], uid: int,
                 task: asyncio.Task[None]) -> None:
        if task.cancelled():
            progress.dropped(uid)
        elif (exc := task.exception()) is not None:
            progress.dropped(uid)
            if not isinstance(exc, LaneBlocked):  # its predecessor's failure is the news
                failures.append(exc)
        else:
            progress.done(uid)

    async def _save(self, uidvalidity: int, progress: _Progress) -> None:
        if progress.checkpoint > progress.saved:
            await self.ingest.save_checkpoint(self.account, self.mailbox,
                                              Checkpoint(uidvalidity, progress.checkpoint))
            progress.saved = progress.checkpoint

    async def _deliver_one(self, raw: bytes, uidvalidity: int, uid: int) -> None:
        """Bridge one message. One that fails for a reason that is not an outage is
        tried again (the session restarts) and, after MAX_FAILURES, set aside with the
        reason so that the messages after it are bridged."""
        source = f"imap:{self.name}"
        try:
            await self.deliver(raw, Envelope(source, (self.address,) if self.address else ()))
        except TransientFailure:
            raise
        except Exception as exc:
            key = f"{self.account}:{self.mailbox}:{uidvalidity}:{uid}"
            failures = await self.ingest.count_failure(key)
            if failures < MAX_FAILURES:
                raise
            log.exception("IMAP %s/%s: message UID %d failed %d times; set aside",
                          self.account, self.mailbox, uid, failures)
            reason = f"set aside after {failures} failed attempts ({failure_text(exc)})"
            await self.ingest.set_aside(key, raw, refusal_for(raw, source, reason))

    async def _fetch(self, client: aioimaplib.IMAP4, uids: list[int]) -> dict[int, bytes]:
        answer = await client.uid("fetch", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
        if answer.result != "OK":
            raise MailError(f"fetching from {self.mailbox} failed")
        messages: dict[int, bytes] = {}
        lines = answer.lines
        for i, line in enumerate(lines[:-1]):
            if isinstance(line, bytes) and b" FETCH " in line:
                match = _FETCH_UID.search(line)
                if match and i + 1 < len(lines) and isinstance(lines[i + 1], bytearray):
                    messages[int(match.group(1))] = bytes(lines[i + 1])
        return messages

    async def _idle(self, client: aioimaplib.IMAP4, stop: asyncio.Event) -> None:
        idle = await client.idle_start(timeout=IDLE_SECONDS)
        try:
            while not stop.is_set():
                if self._lost.is_set():
                    raise MailError("the IMAP server closed the connection")
                try:
                    pushed = await client.wait_server_push(timeout=1.0)
                except TimeoutError:
                    if idle.done():
                        return  # IDLE timed out: re-issue it after a catch-up
                    continue
                if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return
                if any(b"EXISTS" in line for line in pushed if isinstance(line, bytes)):
                    return
        finally:
            if client.has_pending_idle() and not self._lost.is_set():
                client.idle_done()
                await asyncio.wait_for(idle, 10)


class _Progress:
    """Which UIDs of a catch-up are in hand and which are over; the checkpoint is the
    highest UID with every UID up to it over."""

    def __init__(self, last: int) -> None:
        self.saved = self.checkpoint = last
        self.in_hand: set[int] = set()
        self.over: list[int] = []  # a heap: done, beyond a UID still in hand
        self.held: int | None = None  # the lowest UID that failed: nothing passes it
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, uid: int) -> None:
        self.in_hand.add(uid)
        self._idle.clear()

    def done(self, uid: int) -> None:
        self.in_hand.discard(uid)
        heapq.heappush(self.over, uid)
        self._advance()

    def dropped(self, uid: int) -> None:
        self.in_hand.discard(uid)
        self.held = uid if self.held is None else min(self.held, uid)
        self._advance()

    def _advance(self) -> None:
        bound = min(self.in_hand, default=None)
        if self.held is not None:
            bound = self.held if bound is None else min(bound, self.held)
        while self.over and (bound is None or self.over[0] < bound):
            self.checkpoint = max(self.checkpoint, heapq.heappop(self.over))
        if not self.in_hand:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


def _uidvalidity(lines: list[bytes]) -> int:
    for line in lines:
        match = _UIDVALIDITY.search(line)
        if match:
            return int(match.group(1))
    raise MailError("the IMAP server did not report UIDVALIDITY")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
