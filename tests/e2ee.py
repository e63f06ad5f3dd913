"""A second end-to-end encrypting Matrix client for tests: matrix-nio with its own key
store, logged in as a test user, syncing in the background as Element would (sharing
and receiving room keys, trusting devices on first use), and reading what it decrypts."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    RoomCreateResponse,
    RoomKeyRequest,
    RoomMessage,
    RoomSendResponse,
)
from nio.crypto.attachments import decrypt_attachment

from bridges.matrix.sync import keep_keys
from tests.conftest import Services

ENCRYPTION = {"type": "m.room.encryption", "state_key": "",
              "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class E2eeUser:
    def __init__(self, services: Services, name: str, store: Path) -> None:
        self.services = services
        self.user_id = services.matrix_id(name)
        store.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            services.env["SWITCHBOARD_MATRIX_HOMESERVER"], self.user_id, store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))
        self.decrypted: list[tuple[str, RoomMessage]] = []  # (room, event), as received
        self.undecryptable: list[MegolmEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.key_requests: list[RoomKeyRequest] = []  # other people's, as they came

    async def start(self) -> E2eeUser:
        answer = await self.client.login(self.services.password, device_name="e2ee test")
        assert isinstance(answer, LoginResponse), answer
        await keep_keys(self.client)
        # matrix-nio answers only its own user's key requests and drops everyone else's;
        # Element answers another person's for a session it made. Kept here, to answer.
        olm = self.client.olm
        own_rule = olm._collect_single_key_share

        def collect(request: RoomKeyRequest) -> bool:
            if request.sender != self.user_id:
                self.key_requests.append(request)
                return True
            return bool(own_rule(request))

        olm._collect_single_key_share = collect

        async def on_message(room: MatrixRoom, event: RoomMessage) -> None:
            self.decrypted.append((room.room_id, event))

        async def on_undecryptable(room: MatrixRoom, event: MegolmEvent) -> None:
            self.undecryptable.append(event)

        async def on_invite(room: MatrixRoom, event: InviteMemberEvent) -> None:
            if event.state_key == self.user_id and event.membership == "invite":
                await self.client.join(room.room_id)

        self.client.add_event_callback(on_message, RoomMessage)
        self.client.add_event_callback(on_undecryptable, MegolmEvent)
        self.client.add_event_callback(on_invite, InviteMemberEvent)
        await self.client.sync(timeout=0, full_state=True)
        self._task = asyncio.create_task(self._sync())
        return self

    async def _sync(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                await self.client.sync(timeout=1000, set_presence="online")
                await keep_keys(self.client)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        with contextlib.suppress(Exception):
            await self.client.logout()
        await self.client.close()

    async def encrypted_room(self, invite: list[str], name: str, direct: bool = False) -> str:
        created = await self.client.room_create(name=name, invite=invite, is_direct=direct,
                                                initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        return str(created.room_id)

    async def send(self, room: str, content: dict[str, Any]) -> str:
        """An encrypted message (the client's sync has to know the room first)."""
        for _ in range(100):
            if room in self.client.rooms:
                break
            await asyncio.sleep(0.1)
        answer = await self.client.room_send(room, "m.room.message", content,
                                             ignore_unverified_devices=True)
        assert isinstance(answer, RoomSendResponse), answer
        return str(answer.event_id)

    async def forward_requested_keys(self) -> int:
        """Answer the key requests that came, as Element does: a session this device made
        is forwarded (``m.forwarded_room_key``, over Olm) to the device that asked."""
        olm, answered = self.client.olm, 0
        for request in list(self.key_requests):
            session = olm.inbound_group_store.get(request.room_id, request.sender_key,
                                                  request.session_id)
            device = olm.device_store[request.sender].get(request.requesting_device_id)
            if session is None or device is None:
                continue
            self.client.unblacklist_device(device)
            self.client.verify_device(device)
            if olm.session_store.get(device.curve25519) is None:
                await self.client.keys_claim({request.sender: [device.id]})
            channel = olm.session_store.get(device.curve25519)
            assert channel is not None, "no Olm session with the requesting device"
            await self.client.to_device(olm._encrypt_forwarding_key(
                request.room_id, session, channel, device))
            self.key_requests.remove(request)
            answered += 1
        return answered

    def messages(self, room: str) -> list[RoomMessage]:
        return [e for r, e in self.decrypted if r == room]

    async def raw_events(self, room: str, limit: int = 50) -> list[dict[str, Any]]:
        """The room's events as the homeserver holds them (not decrypted)."""
        answer = await self.client.room_messages(room, start="", limit=limit)
        return [e.source for e in getattr(answer, "chunk", [])]

    async def download_decrypted(self, file: dict[str, Any]) -> bytes:
        """An EncryptedFile's content: fetched, checked against its hash, decrypted."""
        server, _, media = str(file["url"])[len("mxc://"):].partition("/")
        answer = await self.client.download(server_name=server, media_id=media)
        body = getattr(answer, "body", b"")
        return bytes(decrypt_attachment(body, file["key"]["k"], file["hashes"]["sha256"],
                                        file["iv"]))
