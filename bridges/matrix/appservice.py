"""The application-service API Switchboard serves to its homeserver: transactions of
room events (handled once each, whichever process the homeserver reaches), user and room
queries, and ping. Only the homeserver, by its ``hs_token``, is heard."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from nio import Event, RoomMessageText

from bot.errors import StoreError
from bot.stores import AppServiceState
from bridges.http import Handler
from bridges.matrix.listener import Listener
from bridges.matrix.registration import Registration

log = logging.getLogger(__name__)
PREFIX = "/_matrix/app/v1"


def _refusal(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


class AppServiceApi:
    """``hear``: the listener of the current Matrix connection (the process that takes
    the bot's keys over gets a new one)."""

    def __init__(self, registration: Registration, state: AppServiceState,
                 hear: Callable[[], Listener]) -> None:
        self.registration = registration
        self.state = state
        self.hear = hear
        self.handled = 0  # events taken from transactions, for the logs and tests

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("PUT", f"{PREFIX}/transactions/{{txn}}", self.transaction),
                ("GET", f"{PREFIX}/users/{{user}}", self.user),
                ("GET", f"{PREFIX}/rooms/{{alias}}", self.room),
                ("POST", f"{PREFIX}/ping", self.ping)]

    def _unheard(self, request: web.Request) -> web.Response | None:
        """The refusal for a caller that is not the homeserver (None: it is)."""
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
            or request.query.get("access_token", "")
        if not given:
            return _refusal(401, "M_UNAUTHORIZED", "no hs_token given")
        if not hmac.compare_digest(given.encode(), self.registration.hs_token.encode()):
            return _refusal(403, "M_FORBIDDEN", "that is not this application service's "
                                                "hs_token")
        return None

    async def transaction(self, request: web.Request) -> web.Response:
        refused = self._unheard(request)
        if refused is not None:
            return refused
        txn = request.match_info["txn"]
        try:
            body = await request.json()
        except ValueError:
            return _refusal(400, "M_NOT_JSON", "the transaction is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _refusal(400, "M_BAD_JSON", "the transaction has no events list")
        try:
            if await self.state.transaction_handled(txn):
                return web.json_response({})
            listener = self.hear()
            for event in events:
                if isinstance(event, dict):
                    await self._take(listener, event)
            await self.state.record_transaction(txn)
        except StoreError as exc:
            # Unanswered, the homeserver sends the transaction again later.
            log.warning("Matrix transaction %s not handled (%s): the homeserver repeats it",
                        txn, exc)
            return _refusal(503, "M_UNKNOWN", "the store is unreachable; try again")
        return web.json_response({})

    async def _take(self, listener: Listener, event: dict[str, Any]) -> None:
        """One pushed event. Encrypted ones stay unread: the homeserver gives an
        application service no keys (routes into encrypted rooms are refused)."""
        room = str(event.get("room_id", ""))
        kind = event.get("type")
        content = event.get("content") if isinstance(event.get("content"), dict) else {}
        assert isinstance(content, dict)
        self.handled += 1
        try:
            if kind == "m.room.member" and event.get("state_key") == self.registration.bot \
                    and content.get("membership") == "invite":
                await listener.invited(room, str(event.get("sender", "")))
            elif kind == "m.room.message":
                parsed = Event.parse_event(event)
                if isinstance(parsed, RoomMessageText) and listener.heeds(parsed):
                    name = await listener.matrix.member_name(room, parsed.sender)
                    await listener.said(room, name, parsed)
        except StoreError:
            raise
        except Exception:
            log.exception("the pushed event %s in %s could not be handled",
                          event.get("event_id"), room)

    async def user(self, request: web.Request) -> web.Response:
        """Ghosts are made when their sender's first email comes, never on a query."""
        refused = self._unheard(request)
        return refused or _refusal(404, "ORG.SWITCHBOARD_NOT_FOUND",
                                   "Switchboard makes its users itself")

    async def room(self, request: web.Request) -> web.Response:
        refused = self._unheard(request)
        return refused or _refusal(404, "ORG.SWITCHBOARD_NOT_FOUND",
                                   "Switchboard claims no room aliases")

    async def ping(self, request: web.Request) -> web.Response:
        return self._unheard(request) or web.json_response({})
