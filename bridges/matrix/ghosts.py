"""Email senders on Matrix, in application-service mode: each one a user of their own
(a ghost, in the namespace the registration claims), named after the From header and
marked as email, who joins the room and posts the sender's card there."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
from typing import Any

import aiohttp
from nio import Api, AsyncClient
from nio.api import MATRIX_API_PATH_V1, MATRIX_API_PATH_V3

from bot.errors import StoreError
from bot.settings import MatrixSettings
from bot.stores import AppServiceState
from bridges.errors import MatrixError
from bridges.matrix.registration import Registration

log = logging.getLogger(__name__)

NAME_LIMIT = 64  # characters of the sender's name kept, before the email mark
EMAIL_MARK = " (email)"
ERASED_NAME = "an erased sender" + EMAIL_MARK
PING_TRIES = 3
LIMIT_RETRIES = 5  # a post's tries past M_LIMIT_EXCEEDED (as the bot's client makes)


def split_sender(sender: str) -> tuple[str, str]:
    """A card's sender, ``Name <address>`` or the address (the name decoded, unquoted:
    it may hold any character), as (name, lowercase address)."""
    if sender.endswith(">") and "<" in sender:
        name, _, address = sender[:-1].rpartition("<")
        return name.strip(), address.strip().lower()
    return "", sender.strip().lower()


def display_name(sender: str) -> str:
    """What a ghost is called: the From header's name (the address when it has none),
    without control, format or invisible characters (bidirectional overrides, zero-width
    joiners) a name could hide behind, on one line, short, and marked as email."""
    name, address = split_sender(sender)
    cleaned = "".join(" " if unicodedata.category(c) in ("Zs", "Zl", "Zp") or c in "\t\r\n"
                      else c for c in (name or address)
                      if c in "\t\r\n" or not unicodedata.category(c).startswith("C"))
    cleaned = re.sub(r"\s+", " ", cleaned).strip().strip('"').strip()
    if len(cleaned) > NAME_LIMIT:
        cleaned = cleaned[:NAME_LIMIT - 1].rstrip() + "…"
    return (cleaned or address or "someone") + EMAIL_MARK


async def as_service(client: AsyncClient, registration: Registration, method: str,
                     path: list[str], body: dict[str, Any] | None = None, *,
                     as_user: str | None = None, base: str = MATRIX_API_PATH_V3
                     ) -> tuple[int, dict[str, Any]]:
    """One client-server API call as the application service (as ``as_user``: one of its
    ghosts); the HTTP status and the JSON answer."""
    query = {"user_id": as_user} if as_user else {}
    headers = {"Authorization": f"Bearer {registration.as_token}",
               "Content-Type": "application/json"}
    try:
        async with await client.send(method, Api._build_path(path, query, base),
                                     json.dumps(body or {}), headers) as answer:
            found = await answer.json(content_type=None)
            return answer.status, found if isinstance(found, dict) else {}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise MatrixError(f"the homeserver is unreachable ({exc})", transient=True) from exc


async def ping(client: AsyncClient, registration: Registration) -> float:
    """Asks the homeserver to reach the application service (and so to send at once what
    it held back while the service was away); the round trip in milliseconds."""
    for tried in range(PING_TRIES):
        status, body = await as_service(client, registration, "POST",
                                        ["appservice", registration.id, "ping"],
                                        {"transaction_id": f"ping-{time.time_ns()}"},
                                        base=MATRIX_API_PATH_V1)
        # Synapse's own HTTP client now and then fails a ping it made (a Twisted
        # "AlreadyCalled"), the service being up: a second ping tells.
        if status != 502 or tried == PING_TRIES - 1:
            break
        await asyncio.sleep(0.2)
    if status != 200:
        raise MatrixError(f"the homeserver could not reach Switchboard at "
                          f"{registration.url}: {body.get('errcode', status)} "
                          f"{body.get('error', '')}".rstrip(), transient=status >= 500)
    return float(body.get("duration_ms", 0))


async def erase_ghosts(settings: MatrixSettings, emails: list[str]) -> int:
    """Erased senders' users no longer show their names (in every room they are in):
    how many there were to rename."""
    registration = Registration.load(settings.registration, settings.user.split(":", 1)[1])
    client = AsyncClient(settings.homeserver, settings.user)
    renamed = 0
    try:
        for email in emails:
            ghost = registration.ghost(email)
            status, _ = await as_service(client, registration, "PUT",
                                         ["profile", ghost, "displayname"],
                                         {"displayname": ERASED_NAME}, as_user=ghost)
            renamed += status == 200
    finally:
        await client.close()
    return renamed


class Ghosts:
    """The homeserver, as the application service (its ``as_token``) speaks to it."""

    def __init__(self, client: AsyncClient, registration: Registration,
                 state: AppServiceState) -> None:
        self.client = client
        self.registration = registration
        self.state = state
        # email -> the lock on making its user ready, and how many posts want it
        self._making: dict[str, tuple[asyncio.Lock, int]] = {}
        self.throttled = 0  # posts the homeserver refused for its rate limit
        self.throttled_seconds = 0.0

    async def call(self, method: str, path: list[str], body: dict[str, Any] | None = None,
                   *, as_user: str | None = None) -> tuple[int, dict[str, Any]]:
        return await as_service(self.client, self.registration, method, path, body,
                                as_user=as_user)

    async def ping(self) -> float:
        return await ping(self.client, self.registration)

    async def speaker(self, sender: str, room: str) -> tuple[str, str] | None:
        """(the sender's email, their ghost), in ``room`` under their current name; None
        when the ghost cannot be made or cannot join (the bot then posts, as before)."""
        email = split_sender(sender)[1]
        if "@" not in email:
            return None
        name = display_name(sender)
        # One sender's burst makes their user once: the homeserver fails two renames of
        # one user at once (another process's, rarer, is met by trying again).
        lock, waiting = self._making.get(email, (asyncio.Lock(), 0))
        self._making[email] = (lock, waiting + 1)
        try:
            async with lock:
                for tried in range(2):
                    try:
                        return email, await self._ready(email, name, room)
                    except MatrixError as exc:
                        if not exc.transient or tried:
                            raise
        except (MatrixError, StoreError) as exc:
            log.warning("the email sender's Matrix user could not post in %s (%s): the bot "
                        "posts their email", room, exc)
        finally:
            lock, waiting = self._making[email]
            if waiting == 1:
                del self._making[email]
            else:
                self._making[email] = (lock, waiting - 1)
        return None

    async def _ready(self, email: str, name: str, room: str) -> str:
        known = await self.state.ghost(email)
        ghost = known[0] if known else self.registration.ghost(email)
        if known is None:
            await self._register(ghost)
        if known is None or known[1] != name:
            await self._rename(ghost, name)
            await self.state.save_ghost(email, ghost, name)
        if not await self.state.ghost_in(email, room):
            await self.join(email, ghost, room)
        return ghost

    async def _register(self, ghost: str) -> None:
        localpart = ghost[1:].split(":", 1)[0]
        status, body = await self.call("POST", ["register"], {
            "type": "m.login.application_service", "username": localpart,
            "inhibit_login": True})
        if status != 200 and body.get("errcode") != "M_USER_IN_USE":
            raise MatrixError(f"the homeserver would not register {ghost}: "
                              f"{body.get('error', status)}", transient=status >= 500)

    async def _rename(self, ghost: str, name: str) -> None:
        status, body = await self.call("PUT", ["profile", ghost, "displayname"],
                                       {"displayname": name}, as_user=ghost)
        if status != 200:
            raise MatrixError(f"the homeserver would not name {ghost}: "
                              f"{body.get('error', status)}", transient=status >= 500)

    async def join(self, email: str, ghost: str, room: str) -> None:
        """Into ``room``: the bot invites the ghost (a private room needs it), it joins."""
        status, body = await self.call("POST", ["rooms", room, "invite"], {"user_id": ghost})
        # Already invited or in the room: the join below is what counts.
        if status != 200 and body.get("errcode") != "M_FORBIDDEN":
            raise MatrixError(f"the bot could not invite {ghost} into {room}: "
                              f"{body.get('error', status)}", transient=status >= 500)
        status, body = await self.call("POST", ["join", room], {}, as_user=ghost)
        if status != 200:
            raise MatrixError(f"{ghost} could not join {room}: {body.get('error', status)}",
                              transient=status >= 500)
        await self.state.ghost_joined(email, room, True)

    async def send(self, speaker: tuple[str, str], room: str, content: dict[str, Any],
                   txn: str) -> str:
        """``content`` into ``room`` from the ghost (joined again if it was removed)."""
        email, ghost = speaker
        path = ["rooms", room, "send", "m.room.message", txn]
        status, body = await self._paced("PUT", path, content, ghost)
        if status == 403:
            await self.state.ghost_joined(email, room, False)
            await self.join(email, ghost, room)
            status, body = await self._paced("PUT", path, content, ghost)
        if status != 200 or "event_id" not in body:
            raise MatrixError(f"the homeserver refused {ghost}'s message to {room}: "
                              f"{body.get('error', status)}",
                              transient=status == 429 or status >= 500)
        return str(body["event_id"])

    async def _paced(self, method: str, path: list[str], content: dict[str, Any],
                     ghost: str) -> tuple[int, dict[str, Any]]:
        """The call, after the waits a homeserver that rate-limits the application service
        asks for (a registration with rate_limited: true), counted as the bot's are."""
        for tried in range(LIMIT_RETRIES + 1):
            status, body = await self.call(method, path, content, as_user=ghost)
            if status != 429 or tried == LIMIT_RETRIES:
                break
            wait = float(body.get("retry_after_ms") or 5000) / 1000
            self.throttled += 1
            self.throttled_seconds += wait
            log.warning("the homeserver rate-limits %s (M_LIMIT_EXCEEDED): set "
                        "rate_limited: false in the registration", ghost)
            await asyncio.sleep(wait)
        return status, body

    async def login_bot(self, device_id: str | None, device_name: str) -> tuple[str, str]:
        """A device for the bot, by the application service's token (no password): its
        (device id, access token). ``device_id``: the device kept from before. The
        homeserver makes no account for the application service's own user: the first
        start registers it (a device needs one)."""
        await self._register(self.registration.bot)
        body: dict[str, Any] = {"type": "m.login.application_service",
                                "identifier": {"type": "m.id.user",
                                               "user": self.registration.sender_localpart},
                                "initial_device_display_name": device_name}
        if device_id:
            body["device_id"] = device_id
        status, answer = await self.call("POST", ["login"], body)
        if status != 200 or "access_token" not in answer:
            raise MatrixError(f"the homeserver refused the application service's login of "
                              f"{self.registration.bot}: {answer.get('error', status)} (is "
                              "the registration loaded: app_service_config_files, and the "
                              "homeserver restarted?)", transient=status >= 500)
        return str(answer["device_id"]), str(answer["access_token"])
