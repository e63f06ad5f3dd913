"""Socket Mode: Slack's events and actions over a websocket the app opens, for deployments
without a public URL. Bolt's own async adapter speaks the protocol (``hello``, envelopes,
acks, ``disconnect`` and reconnecting); the same handlers answer as over HTTP.

Slack re-delivers an envelope whose ack it did not get (a socket dropped between our
handling and our ack reaching Slack): each delivery is handled the first time only, by a
key that stays the same across re-deliveries, checked in the store so that every process
sharing the app token agrees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bridges.slack.app import SlackApp

log = logging.getLogger(__name__)

SEEN_TTL = 3600  # seconds: Slack stops re-delivering long before
FirstTime = Callable[[str, int], Awaitable[bool]]


def delivery_key(request: SocketModeRequest) -> str:
    """What names one delivery across re-deliveries: the event's id, the user's trigger
    (one per click, command or submission), else the envelope."""
    payload: dict[str, Any] = request.payload or {}
    key = payload.get("event_id") or payload.get("trigger_id") or request.envelope_id
    return f"{request.type}:{key}"


class SocketMode:
    def __init__(self, app: SlackApp, app_token: str, first_time: FirstTime,
                 ping_interval: float = 10) -> None:
        self.handler = AsyncSocketModeHandler(app.bolt, app_token,
                                              web_client=app.network.client,
                                              ping_interval=ping_interval)
        self.first_time = first_time
        self.client: SocketModeClient = self.handler.client
        self.client.socket_mode_request_listeners[:] = [self._handle]

    async def _handle(self, client: AsyncBaseSocketModeClient,
                      request: SocketModeRequest) -> None:
        if not await self.first_time(delivery_key(request), SEEN_TTL):
            log.info("Slack re-delivered %s (retry %s): handled already, acked again",
                     request.envelope_id, getattr(request, "retry_attempt", "?"))
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=request.envelope_id))
            return
        await self.handler.handle(self.client, request)

    @property
    def connected(self) -> bool:
        session = self.client.current_session
        return session is not None and not session.closed

    async def run(self, stop: asyncio.Event) -> None:
        """Connected (and reconnecting, as Slack asks or the socket drops) until ``stop``."""
        await self.client.connect()  # type: ignore[no-untyped-call]
        log.info("Slack Socket Mode connected")
        try:
            await stop.wait()
        finally:
            await self.client.close()  # type: ignore[no-untyped-call]
