"""IMAP ingest: catch up from a checkpoint, then IDLE, forever, with reconnects.

A mailbox is read by one process at a time (a Redis lease). Messages are fetched
in UID order and handed to ``deliver``; the checkpoint (UIDVALIDITY and last UID)
moves only past messages whose delivery finished, so a crash re-reads, and the
de-duplication downstream makes the re-read harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable

import aioimaplib

from bot.settings import ImapSettings
from bridges.email.connect import imap_connect
from bridges.email.poison import MAX_FAILURES, failure_text, refusal_for
from bridges.errors import MailError
from storage.ingest import Checkpoint, RedisIngest

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, str], Awaitable[None]]

BATCH = 50
IDLE_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
LEASE_TTL = 15.0
BACKOFF_MAX = 30.0
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_UID = re.compile(rb"\(UID (\d+) ")


class TransientIngestError(Exception):
    """Delivery of a message failed for now; the session ends and is retried later."""


class ImapIngest:
    def __init__(self, cfg: ImapSettings, mailbox: str, deliver: Deliver, ingest: RedisIngest,
                 *, holder: str | None = None, ca_file: str | None = None,
                 require_tls: bool = False) -> None:
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
        self.sessions = 0  # how many IMAP sessions were opened (reconnects show here)
        self._lost = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                if not await self.ingest.take_lease(self.lease_name, self.holder, LEASE_TTL):
                    await _wait(stop, LEASE_TTL / 3)
                    continue
                await self._session(stop)
                backoff = 1.0
            except (OSError, TimeoutError, aioimaplib.AioImapException, MailError,
                    TransientIngestError) as exc:
                log.warning("IMAP %s/%s: %s; reconnecting in %.0f s", self.account,
                            self.mailbox, exc, backoff)
            except Exception:
                # Store outages and the like: never let the loop die.
                log.exception("IMAP %s/%s failed; reconnecting in %.0f s", self.account,
                              self.mailbox, backoff)
            finally:
                self.connected = False
            await _wait(stop, backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
        await self.ingest.release_lease(self.lease_name, self.holder)

    async def _connect(self) -> aioimaplib.IMAP4:
        cfg = self.cfg
        self._lost.clear()

        def lost(_: Exception | None) -> None:
            self._lost.set()

        client, _ = await imap_connect(cfg, ca_file=self.ca_file, require_tls=self.require_tls,
                                       lost=lost)
        answer = await client.login(cfg.user, cfg.password)
        if answer.result != "OK":
            raise MailError(f"IMAP login of {cfg.user} refused: "
                            f"{b' '.join(answer.lines).decode(errors='replace')}")
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
            self.sessions += 1
            while not stop.is_set():
                if renew.done():
                    raise MailError("lost the mailbox lease to another process")
                await self._catch_up(client, uidvalidity, stop)
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
                        stop: asyncio.Event) -> None:
        """Bridge what arrived since the checkpoint, in UID order. A stop takes effect
        between two messages: the one in hand is finished and checkpointed, no new one
        is started, so a restart neither loses nor repeats anything."""
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
        for start in range(0, len(uids), BATCH):
            if stop.is_set():
                return
            chunk = uids[start:start + BATCH]
            messages = await self._fetch(client, chunk)
            done = last
            try:
                for uid in chunk:
                    if stop.is_set():
                        break
                    raw = messages.get(uid)
                    if raw is not None:
                        await self._deliver_one(raw, uidvalidity, uid)
                    done = uid
            finally:
                if done > last:
                    await self.ingest.save_checkpoint(self.account, self.mailbox,
                                                      Checkpoint(uidvalidity, done))
                    last = done

    async def _deliver_one(self, raw: bytes, uidvalidity: int, uid: int) -> None:
        """Bridge one message. One that fails for a reason that is not an outage is
        tried again (the session restarts) and, after MAX_FAILURES, set aside with the
        reason so that the messages after it are bridged."""
        source = f"imap:{self.mailbox}"
        try:
            await self.deliver(raw, source)
        except TransientIngestError:
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


def _uidvalidity(lines: list[bytes]) -> int:
    for line in lines:
        match = _UIDVALIDITY.search(line)
        if match:
            return int(match.group(1))
    raise MailError("the IMAP server did not report UIDVALIDITY")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
