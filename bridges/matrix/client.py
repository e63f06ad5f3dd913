"""The Matrix side, on matrix-nio: login (kept across restarts), posts, threads, media."""

from __future__ import annotations

import hashlib
import io
import logging
import ssl
import time
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinedMembersError,
    LoginError,
    PresenceGetError,
    RoomCreateError,
    RoomPreset,
    RoomResolveAliasError,
    RoomSendError,
    UploadError,
    WhoamiError,
)

from bot.metering import customer_of
from bot.model import Address, ChatRef, ChatTarget, Network, Presence
from bot.ports import ChatReply, EmailCard, Notice
from bot.render import render
from bot.settings import MatrixSettings
from bot.stores import MatrixState
from bridges.errors import MatrixError

log = logging.getLogger(__name__)

DEVICE_NAME = "switchboard"


def txn_id(key: str) -> str:
    """A transaction id derived from the post's key: the homeserver drops a repeat."""
    return "sb" + hashlib.sha256(key.encode()).hexdigest()[:32]


# Matrix error codes that mean "later" whatever the HTTP status says.
TRANSIENT_ERRCODES = frozenset({"M_LIMIT_EXCEEDED", "M_RESOURCE_LIMIT_EXCEEDED"})


def _transient(response: ErrorResponse) -> bool:
    """Whether to try again later: the HTTP status (429 and 5xx, or none at all: the
    homeserver was not reached) and the Matrix error code (which nio puts in
    ``status_code``) decide; every other 4xx is a refusal a retry cannot change."""
    transport = getattr(response, "transport_response", None)
    status = getattr(transport, "status", None)
    errcode = str(response.status_code or "")
    if errcode in TRANSIENT_ERRCODES:
        return True
    if isinstance(status, int):
        return status == 429 or status >= 500
    # No HTTP answer kept: nio gives the status as the code when the body was no JSON.
    return errcode in ("", "429") or errcode.startswith("5")


def thread_relation(root: str) -> dict[str, Any]:
    return {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
            "m.in_reply_to": {"event_id": root}}


class MatrixNetwork:
    network = Network.MATRIX

    def __init__(self, client: AsyncClient, state: MatrixState) -> None:
        self.client = client
        self.state = state
        self._aliases: dict[str, str] = {}

    async def customer(self, room: str) -> str | None:
        return customer_of(Address.matrix(self.client.user_id)) if self.client.user_id \
            else None

    @classmethod
    async def connect(cls, settings: MatrixSettings, state: MatrixState,
                      ca_file: str | None = None) -> MatrixNetwork:
        """Log in, reusing the saved device so transaction ids stay meaningful."""
        config = AsyncClientConfig(max_limit_exceeded=5, max_timeouts=3, request_timeout=30,
                                   encryption_enabled=False, store_sync_tokens=False)
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        client = AsyncClient(settings.homeserver, settings.user, config=config,
                             ssl=context)
        saved = await state.session(settings.user)
        if saved is not None:
            client.restore_login(settings.user, saved[0], saved[1])
            if not isinstance(await client.whoami(), WhoamiError):
                return cls(client, state)
            log.info("saved Matrix session is no longer valid; logging in again")
        if saved is not None:
            client.device_id = saved[0]  # same device: the server keeps its txn ids
        answer = await client.login(settings.password, device_name=DEVICE_NAME)
        if isinstance(answer, LoginError):
            await client.close()
            raise MatrixError(f"{settings.homeserver} refused the login of {settings.user}: "
                              f"{answer.message} (check SWITCHBOARD_MATRIX_PASSWORD)")
        await state.save_session(settings.user, answer.device_id, answer.access_token)
        return cls(client, state)

    async def close(self) -> None:
        await self.client.close()

    async def _room_of(self, target: ChatTarget) -> str:
        if target.room.startswith("#"):
            room = self._aliases.get(target.room)
            if room is None:
                answer = await self.client.room_resolve_alias(target.room)
                if isinstance(answer, RoomResolveAliasError):
                    raise MatrixError(f"the room alias {target.room} is unknown: "
                                      f"{answer.message}")
                room = self._aliases[target.room] = answer.room_id
            return room
        if target.room:
            return target.room
        assert target.user is not None
        return await self.dm_room(target.user.value)

    async def dm_room(self, user_id: str) -> str:
        room = await self.state.dm_room(user_id)
        if room is not None:
            return room
        created = await self.client.room_create(is_direct=True, invite=[user_id],
                                                preset=RoomPreset.trusted_private_chat,
                                                name="Switchboard")
        if isinstance(created, RoomCreateError):
            raise MatrixError(f"could not open a direct chat with {user_id}: {created.message}",
                              transient=_transient(created))
        winner = await self.state.claim_dm_room(user_id, created.room_id)
        if winner != created.room_id:  # another worker was quicker; use its room
            await self.client.room_leave(created.room_id)
        return winner

    async def send(self, room: str, content: dict[str, Any], key: str) -> str:
        try:
            answer = await self.client.room_send(room, "m.room.message", content,
                                                 tx_id=txn_id(key),
                                                 ignore_unverified_devices=True)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Down or restarting: the same transaction id makes the retry post once.
            raise MatrixError(f"the homeserver is unreachable ({exc})", transient=True) from exc
        if isinstance(answer, RoomSendError):
            raise MatrixError(f"the homeserver refused a message to {room}: {answer.message}",
                              transient=_transient(answer))
        return str(answer.event_id)

    async def post_email(self, target: ChatTarget, card: EmailCard, *,
                         thread: ChatRef | None, key: str, resume: bool = False) -> ChatRef:
        # ``resume`` needs nothing here: every event carries a transaction id derived from
        # ``key``, so the homeserver drops whatever the cut-off attempt already sent.
        try:
            return await self._post_email(target, card, thread, key)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MatrixError(f"the homeserver is unreachable ({exc})", transient=True) from exc

    async def _post_email(self, target: ChatTarget, card: EmailCard, thread: ChatRef | None,
                          key: str) -> ChatRef:
        room = await self._room_of(target)
        content: dict[str, Any] = {
            "msgtype": "m.text",
            "body": render("chat/email_card.matrix.txt.j2", card=card, network=Network.MATRIX),
            "format": "org.matrix.custom.html",
            "formatted_body": render("chat/email_card.matrix.html.j2", card=card,
                                     network=Network.MATRIX),
            "m.mentions": {},  # intentional mentions: none, whatever the text says
            "org.switchboard.conversation": card.conversation_id,
            "org.switchboard.entry": card.entry_id,
        }
        if thread is not None:
            content["m.relates_to"] = thread_relation(thread.thread)
        event = await self.send(room, content, key)
        root = thread.thread if thread else event
        # The transaction id names the attachment by its place: two files of one email
        # may share a name, and each must arrive (once).
        for index, attachment in enumerate(card.attachments):
            if attachment.content:
                await self.send_file(room, root, attachment.filename, attachment.content_type,
                                     attachment.content, f"{key}|{index}|{attachment.filename}")
        return ChatRef(Network.MATRIX, room, event, root)

    async def is_member(self, room: str, user: Address) -> bool:
        answer = await self.client.joined_members(room)
        if isinstance(answer, JoinedMembersError):
            log.warning("members of %s unknown: %s", room, answer.message)
            return False
        return any(m.user_id == user.value for m in answer.members)

    async def presence(self, user: Address) -> Presence:
        answer = await self.client.get_presence(user.value)
        if isinstance(answer, PresenceGetError) and answer.status_code == "M_FORBIDDEN":
            # Synapse shows presence only to users who share a room. Open the direct chat
            # now (it is where the reply goes anyway): once they join, presence is seen.
            try:
                await self.dm_room(user.value)
            except MatrixError as exc:
                log.warning("could not open a direct chat with %s: %s", user, exc)
            answer = await self.client.get_presence(user.value)
            if isinstance(answer, PresenceGetError):
                log.info("Matrix presence of %s is not shared with the bot yet", user)
                return Presence.HIDDEN
        if isinstance(answer, PresenceGetError):
            log.warning("Matrix presence of %s unknown: %s", user, answer.message)
            return Presence.UNKNOWN
        return {"online": Presence.PRESENT, "unavailable": Presence.AWAY,
                "offline": Presence.AWAY}.get(str(answer.presence), Presence.UNKNOWN)

    async def find_user(self, email: Address, within: Address | None = None) -> Address | None:
        """Synapse's admin look-up of a user by email (the bot must be a server admin;
        otherwise the homeserver does not say, and None is returned)."""
        session = self.client.client_session
        if session is None:
            return None
        url = (f"{self.client.homeserver}/_synapse/admin/v1/threepid/email/users/"
               f"{email.value}")
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        try:
            async with session.get(url, headers=headers) as answer:
                if answer.status == 200:
                    return Address.matrix(str((await answer.json())["user_id"]))
                if answer.status in (401, 403):
                    log.warning("the homeserver will not look up emails for the bot (%d); "
                                "make it a server admin to find people by email",
                                answer.status)
                return None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MatrixError(f"looking up {email} failed: {exc}", transient=True) from exc

    async def find_email(self, user: Address) -> Address | None:
        """The user's email third-party id, through Synapse's admin API (bot is admin)."""
        session = self.client.client_session
        if session is None:
            return None
        url = f"{self.client.homeserver}/_synapse/admin/v2/users/{user.value}"
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        try:
            async with session.get(url, headers=headers) as answer:
                if answer.status != 200:
                    return None
                threepids = (await answer.json()).get("threepids") or []
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise MatrixError(f"looking up {user}'s email failed: {exc}",
                              transient=True) from exc
        emails = [t["address"] for t in threepids if t.get("medium") == "email"]
        return Address.email(emails[0]) if emails else None

    async def send_reply(self, user: Address, reply: ChatReply, key: str) -> ChatRef:
        room = await self.dm_room(user.value)
        event = await self.send(room, {
            "msgtype": "m.text", "body": render("chat/reply_dm.txt.j2", reply=reply),
            "format": "org.matrix.custom.html",
            "formatted_body": render("chat/reply_dm.matrix.html.j2", reply=reply),
            "m.mentions": {}, "org.switchboard.conversation": reply.conversation_id,
            "org.switchboard.entry": reply.delivery_id,
        }, key)
        return ChatRef(Network.MATRIX, room, event, event)

    async def notify(self, user: Address, notice: Notice, where: ChatRef | None) -> None:
        text = notice.text
        if notice.choices:
            text += "\n" + "  ·  ".join(f"{c.label}: !sb {c.action} {c.value}"
                                         for c in notice.choices)
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
        if where is not None and where.network is Network.MATRIX and where.room:
            room = where.room
            if where.thread:
                content["m.relates_to"] = thread_relation(where.thread)
        else:
            room = await self.dm_room(user.value)
        await self.send(room, content, f"notice|{user}|{hashlib.sha256(text.encode()).hexdigest()}"
                        f"|{time.time()}")

    async def send_file(self, room: str, thread_root: str, filename: str, content_type: str,
                        data: bytes, key: str) -> str:
        uploaded, _ = await self.client.upload(io.BytesIO(data), content_type=content_type,
                                               filename=filename, filesize=len(data))
        if isinstance(uploaded, UploadError):
            raise MatrixError(f"the homeserver refused the upload of {filename}: "
                              f"{uploaded.message}", transient=_transient(uploaded))
        msgtype = "m.image" if content_type.startswith("image/") else "m.file"
        return await self.send(room, {
            "msgtype": msgtype, "body": filename, "filename": filename,
            "url": uploaded.content_uri, "info": {"mimetype": content_type, "size": len(data)},
            "m.relates_to": thread_relation(thread_root), "m.mentions": {},
        }, key)


async def recent_messages(client: AsyncClient, room: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` message events of ``room``, oldest first, as the server sends them."""
    answer = await client.room_messages(room, start="", limit=limit)
    if isinstance(answer, ErrorResponse):
        raise MatrixError(f"could not read {room}: {answer.message}")
    events = [e.source for e in answer.chunk if e.source.get("type") == "m.room.message"]
    return list(reversed(events))
