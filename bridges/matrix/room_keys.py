"""Room keys the bot is missing: asked of the devices that made them, and the messages
they lock read and acted on when a key arrives.

matrix-nio's own ``request_room_key`` asks the bot's *own* devices (it is made for a
person with several devices); the bot has one, so that request could never be answered.
Here the request goes to the sender's device, and a key it forwards is accepted when
that device is the one that made the session (what a direct ``m.room_key`` from it
would be worth): the same trust, not more."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from nio import (
    Api,
    AsyncClient,
    EncryptionError,
    ForwardedRoomKeyEvent,
    LocalProtocolError,
    MatrixRoom,
    MegolmEvent,
    RoomKeyEvent,
    RoomKeyRequestResponse,
)

log = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
KEPT = 500  # undecrypted events kept, waiting for their keys (the oldest go first)

Decrypted = Callable[[MatrixRoom, Any], Awaitable[None]]


class MissingKeys:
    def __init__(self, client: AsyncClient, on_decrypted: Decrypted) -> None:
        self.client = client
        self.on_decrypted = on_decrypted
        self._waiting: OrderedDict[str, tuple[str, MegolmEvent]] = OrderedDict()
        olm = client.olm
        if olm is not None:
            own_rule = olm._should_accept_forward

            def accept(sender: str, sender_key: str, event: ForwardedRoomKeyEvent) -> bool:
                if sender == client.user_id:
                    return bool(own_rule(sender, sender_key, event))
                return self._from_session_owner(sender_key, event)

            olm._should_accept_forward = accept
        client.add_to_device_callback(self._key_arrived, (RoomKeyEvent, ForwardedRoomKeyEvent))

    def _from_session_owner(self, sender_key: str, event: ForwardedRoomKeyEvent) -> bool:
        olm = self.client.olm
        assert olm is not None
        content = event.source.get("content", {})
        request = olm.outgoing_key_requests.get(event.session_id)
        device = olm.device_store.device_from_sender_key(event.sender, sender_key)
        accepted = (request is not None and event.algorithm == MEGOLM
                    and request.room_id == event.room_id
                    and request.session_id == event.session_id
                    and device is not None and not device.blacklisted
                    # The forwarding device made the session itself: nobody in between.
                    and content.get("sender_key") == sender_key
                    and not content.get("forwarding_curve25519_key_chain"))
        if not accepted:
            log.warning("Matrix: a room key forwarded by %s was not asked for, or not by the "
                        "device that made it: ignored", event.sender)
        return accepted

    async def ask(self, room: MatrixRoom, event: MegolmEvent) -> None:
        """Keep ``event`` until its key comes, and ask the sender's device for the key
        (once per session)."""
        event.room_id = event.room_id or room.room_id  # where its session is looked up
        self._waiting[event.event_id] = (room.room_id, event)
        while len(self._waiting) > KEPT:
            self._waiting.popitem(last=False)
        client = self.client
        if client.olm is None or event.session_id in client.outgoing_key_requests:
            return
        assert client.user_id and client.device_id
        message = event.as_key_request(event.sender, client.device_id,
                                       device_id=event.device_id or None)
        method, path, data = Api.to_device(client.access_token, message.type,
                                           message.as_dict(), uuid4())
        try:
            # nio's own bookkeeping of the request (which forwarded keys are expected).
            await client._send(RoomKeyRequestResponse, method, path, data,
                               (event.session_id, event.session_id, event.room_id,
                                event.algorithm))
        except LocalProtocolError as exc:
            log.warning("the room key of %s could not be asked for: %s", event.event_id, exc)

    async def _key_arrived(self, event: RoomKeyEvent) -> None:
        for event_id, (room_id, waiting) in list(self._waiting.items()):
            if waiting.session_id != event.session_id or room_id != event.room_id:
                continue
            try:
                readable = self.client.decrypt_event(waiting)
            except EncryptionError as exc:
                log.warning("%s still cannot be read with the key that came: %s",
                            event_id, exc)
                continue
            del self._waiting[event_id]
            room = self.client.rooms.get(room_id)
            if room is None or isinstance(readable, MegolmEvent):
                continue
            log.info("%s from %s read after its key came; acting on it", event_id,
                     waiting.sender)
            try:
                await self.on_decrypted(room, readable)
            except Exception:
                log.exception("acting on %s, read late, failed", event_id)
