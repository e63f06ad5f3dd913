"""The Matrix side, on matrix-nio: login (kept across restarts), posts, threads, media."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    EncryptionError,
    ErrorResponse,
    JoinedMembersError,
    LocalProtocolError,
    LoginError,
    PresenceGetError,
    RoomCreateError,
    RoomGetStateEventError,
    RoomPreset,
    RoomResolveAliasError,
    RoomSendError,
    UploadError,
    WhoamiError,
)
from nio.rooms import MatrixRoom

from bot.errors import StoreError
from bot.metering import customer_of
from bot.model import Address, ChatRef, ChatTarget, Network, Presence
from bot.ports import ChatReply, EmailCard, Notice
from bot.render import render
from bot.settings import MatrixSettings
from bot.stores import AppServiceState, MatrixState
from bridges.errors import MatrixError
from bridges.matrix.ghosts import Ghosts
from bridges.matrix.registration import Registration
from bridges.matrix.room_versions import RoomPower

log = logging.getLogger(__name__)
THROTTLE_WARNING_EVERY = 60.0  # seconds between two warnings that posts are throttled

DEVICE_NAME = "switchboard"
HAND_OVER_WAIT = 20.0  # seconds a worker waits for the key holder to post for it
MEGOLM = "m.megolm.v1.aes-sha2"
PLAIN_KNOWN_FOR = 60.0  # seconds a room is believed unencrypted before asking again
MODERATOR = 50  # the power level from which a Matrix room member administers the room


def key_store_file(folder: str, user_id: str, device_id: str) -> Path:
    """Where matrix-nio keeps a device's keys (its default store's file name)."""
    return Path(folder) / f"{user_id}_{device_id}.db"


class LostKeys(MatrixError):
    """The bot's device is known but its key store is gone: never silently replaced."""


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
    """The bot on Matrix. The process that holds the bot's device (``encrypting``: the one
    running the sync loop) reads and writes encrypted rooms; the others post plaintext
    rooms only and say so for an encrypted one."""

    network = Network.MATRIX

    def __init__(self, client: AsyncClient, state: MatrixState,
                 encrypted_dms: bool = False, ghosts: Ghosts | None = None, *,
                 encryption: bool = True) -> None:
        self.client = client
        self.state = state
        self.encrypted_dms = encrypted_dms
        # Some process holds the bot's keys (False: encryption is off for every process).
        self.encryption = encryption
        # Application-service mode: email senders post as users of their own.
        self.ghosts = ghosts
        self._aliases: dict[str, str] = {}
        # room -> until when it is known to be unencrypted (for a process without keys):
        # encryption, once on, cannot be turned off; off, it can be turned on at any time.
        self._plain_until: dict[str, float] = {}
        self._encrypted: set[str] = set()
        self._invited: dict[str, str] = {}  # DM room just opened -> the person invited
        self._creations: dict[str, dict[str, Any]] = {}  # room -> its m.room.create event
        # How long the bot's posts waited for the homeserver's rate limit (nio waits,
        # then retries).
        self._refused_seconds = 0.0
        self._refused = 0
        self._warned_at = -THROTTLE_WARNING_EVERY
        client.add_response_callback(self._on_refusal, ErrorResponse)
    async def _on_refusal(self, response: ErrorResponse) -> None:
        if response.status_code != "M_LIMIT_EXCEEDED":
            return
        wait = float(getattr(response, "retry_after_ms", 0) or 5000) / 1000
        self._refused += 1
        self._refused_seconds += wait
        if time.monotonic() - self._warned_at >= THROTTLE_WARNING_EVERY:
            self._warned_at = time.monotonic()
            log.warning("the homeserver is throttling the bot (M_LIMIT_EXCEEDED, %d times, "
                        "%.0f s of waiting so far): posts wait; exempt the bot from its rate "
                        "limit or run Switchboard as an application service (`switchboard "
                        "doctor` says how)", self._refused, self._refused_seconds)

    @property
    def throttled(self) -> int:
        """How many times the homeserver refused a post for its rate limit."""
        return self._refused + (self.ghosts.throttled if self.ghosts else 0)

    @property
    def throttled_seconds(self) -> float:
        """How long posts waited for it, in all."""
        return self._refused_seconds + (self.ghosts.throttled_seconds if self.ghosts else 0)

    @property
    def encrypting(self) -> bool:
        return self.client.olm is not None

    def is_ours(self, user_id: str) -> bool:
        """The bot, or one of the ghosts it speaks for: what they say is not for the bot."""
        return user_id == self.client.user_id or (
            self.ghosts is not None and self.ghosts.registration.is_ghost(user_id))

    async def customer(self, room: str) -> str | None:
        return customer_of(Address.matrix(self.client.user_id)) if self.client.user_id \
            else None

    @classmethod
    async def connect(cls, settings: MatrixSettings, state: MatrixState,
                      ca_file: str | None = None, *, holds_keys: bool = True,
                      appservice: AppServiceState | None = None) -> MatrixNetwork:
        """Log in, reusing the saved device (one device for the bot, for ever: its
        transaction ids and, with encryption, its keys). ``holds_keys``: this process
        opens the device's key store (only one process may: the one that syncs). With a
        registration, the bot logs in as the application service (no password) and
        email senders get ghosts (``appservice``: their state)."""
        encrypting = bool(settings.key_store) and holds_keys
        config = AsyncClientConfig(max_limit_exceeded=5, max_timeouts=3, request_timeout=30,
                                   encryption_enabled=encrypting, store_sync_tokens=False)
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        client = AsyncClient(settings.homeserver, settings.user, config=config, ssl=context,
                             store_path=settings.key_store if encrypting else "")
        saved = await state.session(settings.user)
        if encrypting:
            _check_key_store(settings, await state.keys_device(settings.user))
        ghosts = None
        if settings.appservice:
            assert appservice is not None, "application-service mode needs its state"
            registration = Registration.load(settings.registration,
                                             settings.user.split(":", 1)[1])
            if registration.bot != settings.user:
                await client.close()
                raise MatrixError(f"the registration {settings.registration} is for "
                                  f"{registration.bot}, not SWITCHBOARD_MATRIX_USER "
                                  f"{settings.user}")
            ghosts = Ghosts(client, registration, appservice)
        network = cls(client, state, settings.encrypted_dms, ghosts,
                      encryption=bool(settings.key_store))
        if saved is not None:
            client.restore_login(settings.user, saved[0], saved[1])
            if not isinstance(await client.whoami(), WhoamiError):
                await network._publish_keys()
                return network
            log.info("saved Matrix session is no longer valid; logging in again")
        if saved is not None:
            client.device_id = saved[0]  # same device: its txn ids and keys stay valid
        if ghosts is not None:
            try:
                device, token = await ghosts.login_bot(saved[0] if saved else None,
                                                       DEVICE_NAME)
            except BaseException:
                await client.close()
                raise
            client.restore_login(settings.user, device, token)
            await state.save_session(settings.user, device, token)
            await network._publish_keys()
            return network
        answer = await client.login(settings.password, device_name=DEVICE_NAME)
        if isinstance(answer, LoginError):
            await client.close()
            raise MatrixError(f"{settings.homeserver} refused the login of {settings.user}: "
                              f"{answer.message} (check SWITCHBOARD_MATRIX_PASSWORD)")
        await state.save_session(settings.user, answer.device_id, answer.access_token)
        await network._publish_keys()
        return network

    async def _publish_keys(self) -> None:
        if self.client.olm is None:
            return
        await self.state.save_keys_device(self.client.user_id, self.client.device_id)
        if self.client.should_upload_keys:
            answer = await self.client.keys_upload()
            if isinstance(answer, ErrorResponse):
                raise MatrixError(f"the homeserver refused the bot's device keys: "
                                  f"{answer.message}", transient=_transient(answer))

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
        encryption = [{"type": "m.room.encryption", "state_key": "",
                       "content": {"algorithm": MEGOLM}}] if self.encrypted_dms else []
        created = await self.client.room_create(is_direct=True, invite=[user_id],
                                                preset=RoomPreset.trusted_private_chat,
                                                name="Switchboard", initial_state=encryption)
        if isinstance(created, RoomCreateError):
            raise MatrixError(f"could not open a direct chat with {user_id}: {created.message}",
                              transient=_transient(created))
        winner = await self.state.claim_dm_room(user_id, created.room_id)
        if winner != created.room_id:  # another worker was quicker; use its room
            await self.client.room_leave(created.room_id)
        else:
            self._invited[winner] = user_id
        return winner

    async def _hand_over(self, room: str, content: dict[str, Any], key: str) -> str:
        """A post into an encrypted room from a process without the bot's keys: the one
        with them (`switchboard run`) encrypts and sends it, under the same transaction
        id, so a post handed over twice still appears once."""
        answer = await self.state.hand_over({"room": room, "content": content, "key": key},
                                            HAND_OVER_WAIT)
        if answer is None:
            raise MatrixError(f"{room} is end-to-end encrypted and the process holding the "
                              "bot's keys (`switchboard run`) did not answer in time",
                              transient=True)
        if "event_id" not in answer:
            raise MatrixError(str(answer.get("error", "the key holder could not post")),
                              transient=bool(answer.get("transient", True)))
        return str(answer["event_id"])

    async def serve_handed(self, stop: asyncio.Event) -> None:
        """The key holder's side: post what other processes hand over, until ``stop``."""
        while not stop.is_set():
            try:
                request = await self.state.take_handed(1.0)
            except StoreError as exc:
                log.warning("Matrix hand-over queue unreadable (%s); again in a second", exc)
                await asyncio.sleep(1)
                continue
            if request is None:
                continue
            answer: dict[str, object]
            try:
                content = request["content"]
                assert isinstance(content, dict)
                event = await self.send(str(request["room"]), content, str(request["key"]))
                answer = {"event_id": event}
            except MatrixError as exc:
                answer = {"error": str(exc), "transient": exc.transient}
            try:
                await self.state.answer_handed(str(request["id"]), answer)
            except StoreError as exc:
                log.warning("could not answer a handed Matrix post: %s", exc)

    async def is_encrypted(self, room: str) -> bool:
        """Whether ``room`` is end-to-end encrypted: from the sync for the process that
        holds the keys, else from the room's state (an encrypted room is known for good,
        an unencrypted one asked again after a minute: someone may have turned it on)."""
        known = self.client.rooms.get(room)
        if (known is not None and known.encrypted) or room in self._encrypted:
            return True
        if self._plain_until.get(room, 0.0) > time.monotonic():
            return False
        answer = await self.client.room_get_state_event(room, "m.room.encryption")
        if isinstance(answer, RoomGetStateEventError):
            if answer.status_code != "M_NOT_FOUND":
                raise MatrixError(f"cannot tell whether {room} is encrypted: "
                                  f"{answer.message}", transient=_transient(answer))
            encrypted = False
        else:
            encrypted = answer.content.get("algorithm") == MEGOLM
        if encrypted:
            self._encrypted.add(room)
        else:
            self._plain_until[room] = time.monotonic() + PLAIN_KNOWN_FOR
        return encrypted

    async def _room_for_sending(self, room: str) -> None:
        """matrix-nio encrypts for the rooms its sync has shown; a room not shown yet (a DM
        just opened) is made known, with its encryption, so a first message is not lost."""
        if room not in self.client.rooms:
            encrypted = await self.is_encrypted(room)
            known = MatrixRoom(room, self.client.user_id, encrypted)
            self.client.rooms[room] = known
            if encrypted:
                self.client.encrypted_rooms.add(room)
        invitee = self._invited.pop(room, None)
        known = self.client.rooms[room]
        if invitee is not None and invitee not in known.users:
            # The person has not joined yet: the room's key is shared with their devices
            # too (as clients do for invited members), or the first message would stay
            # unreadable to them.
            known.add_member(invitee, None, None, invited=True)
            if known.encrypted and self.client.olm is not None:
                self.client.olm.update_tracked_users(known)

    async def send(self, room: str, content: dict[str, Any], key: str) -> str:
        if self.client.olm is None and await self.is_encrypted(room):
            if not self.encryption:
                raise MatrixError(self._unencrypting(room))
            return await self._hand_over(room, content, key)
        try:
            await self._room_for_sending(room)
            answer = await self.client.room_send(room, "m.room.message", content,
                                                 tx_id=txn_id(key),
                                                 ignore_unverified_devices=True)
        except (LocalProtocolError, EncryptionError) as exc:
            raise MatrixError(f"could not encrypt for {room}: {exc}", transient=True) from exc
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
        # The sender's own Matrix user posts in plaintext rooms; in an encrypted one the
        # bot does (a ghost has no device of its own to encrypt with: see the README).
        speaker = None
        if self.ghosts is not None and not await self.is_encrypted(room):
            speaker = await self.ghosts.speaker(card.sender, room)
        event = await self._say(speaker, room, content, key)
        root = thread.thread if thread else event
        # The transaction id names the attachment by its place: two files of one email
        # may share a name, and each must arrive (once).
        for index, attachment in enumerate(card.attachments):
            if attachment.content:
                await self.send_file(room, root, attachment.filename, attachment.content_type,
                                     attachment.content, f"{key}|{index}|{attachment.filename}",
                                     speaker=speaker)
        return ChatRef(Network.MATRIX, room, event, root)

    async def _say(self, speaker: tuple[str, str] | None, room: str, content: dict[str, Any],
                   key: str) -> str:
        if speaker is None or self.ghosts is None:
            return await self.send(room, content, key)
        return await self.ghosts.send(speaker, room, content, txn_id(key))

    async def is_member(self, room: str, user: Address) -> bool:
        answer = await self.client.joined_members(room)
        if isinstance(answer, JoinedMembersError):
            log.warning("members of %s unknown: %s", room, answer.message)
            return False
        return any(m.user_id == user.value for m in answer.members)

    async def member_name(self, room: str, user: str) -> str:
        """``user``'s display name in ``room`` (their id when they have none, or it cannot
        be read)."""
        try:
            member = await self._state(room, "m.room.member", key=user)
        except MatrixError:
            return user
        return str((member or {}).get("displayname") or user)

    async def _state(self, room: str, event_type: str, *, whole: bool = False, key: str = ""
                     ) -> dict[str, Any] | None:
        """A state event's content (``whole``: the event, its sender among it); None when
        the room has no such state."""
        query = {"access_token": self.client.access_token}
        if whole:
            query["format"] = "event"
        path = Api._build_path(["rooms", room, "state", event_type, key], query)
        try:
            async with await self.client.send("GET", path) as answer:
                body = await answer.json(content_type=None)
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise MatrixError(f"cannot read {event_type} of {room}: {exc}",
                              transient=True) from exc
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else status
            raise MatrixError(f"cannot read {event_type} of {room}: {error}",
                              transient=status == 429 or status >= 500)
        if whole and "content" not in body:
            return {"content": body}  # a homeserver that gives the content only
        return body

    async def _power(self, room: str) -> RoomPower:
        """Who holds which power in ``room``, by the rules of its room version."""
        create = self._creations.get(room)
        if create is None:
            create = await self._state(room, "m.room.create", whole=True)
            if create is None:
                raise MatrixError(f"{room} has no m.room.create event the bot can read",
                                  transient=True)
            self._creations[room] = create  # a room's creation never changes
        return RoomPower.read(create, await self._state(room, "m.room.power_levels"))

    async def is_room_admin(self, room: str, user: Address) -> bool:
        power = await self._power(room)
        return power.at_least(user.value, MODERATOR) and await self.is_member(room, user)

    async def cannot_post(self, room: str) -> str | None:
        answer = await self.client.joined_members(room)
        if isinstance(answer, JoinedMembersError) or not any(
                m.user_id == self.client.user_id for m in answer.members):
            return "Switchboard is not in this room; invite it first"
        if not self.encryption and await self.is_encrypted(room):
            return self._unencrypting(room)
        return None

    def _unencrypting(self, room: str) -> str:
        """Why nothing is posted into an encrypted room (never in plaintext)."""
        why = ("Switchboard runs as an application service, which the homeserver gives no "
               "encryption keys") if self.ghosts is not None else \
            "Switchboard's end-to-end encryption is off (SWITCHBOARD_MATRIX_ENCRYPTION)"
        return (f"{room} is end-to-end encrypted and {why}: route its mail to an "
                "unencrypted room, or run Switchboard with a bot account and encryption on "
                "(see the README)")

    async def room_admins(self, room: str, limit: int) -> list[Address]:
        power = await self._power(room)
        answer = await self.client.joined_members(room)
        if isinstance(answer, JoinedMembersError):
            raise MatrixError(f"the members of {room} are unknown: {answer.message}",
                              transient=True)
        return [Address.matrix(m.user_id) for m in answer.members
                if m.user_id != self.client.user_id
                and power.at_least(m.user_id, MODERATOR)][:limit]

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
                        data: bytes, key: str, *, speaker: tuple[str, str] | None = None
                        ) -> str:
        """A file into a thread; into an encrypted room the file itself is encrypted and
        its key travels in the (encrypted) event, as the spec's EncryptedFile."""
        encrypt = await self.is_encrypted(room)
        uploaded, keys = await self.client.upload(
            io.BytesIO(data), content_type="application/octet-stream" if encrypt
            else content_type, filename=None if encrypt else filename,
            filesize=len(data), encrypt=encrypt)
        if isinstance(uploaded, UploadError):
            raise MatrixError(f"the homeserver refused the upload of {filename}: "
                              f"{uploaded.message}", transient=_transient(uploaded))
        msgtype = "m.image" if content_type.startswith("image/") else "m.file"
        content: dict[str, Any] = {
            "msgtype": msgtype, "body": filename, "filename": filename,
            "info": {"mimetype": content_type, "size": len(data)},
            "m.relates_to": thread_relation(thread_root), "m.mentions": {}}
        if encrypt:
            content["file"] = {"url": uploaded.content_uri, "mimetype": content_type,
                               **(keys or {})}
        else:
            content["url"] = uploaded.content_uri
        return await self._say(speaker, room, content, key)


def _check_key_store(settings: MatrixSettings, device: str | None) -> None:
    """The key store of the device whose keys were made (``device``) must be there: a new
    one would be a new identity to everyone the bot shares encrypted rooms with, and
    every earlier message unreadable. Missing, the start stops with what to do."""
    folder = Path(settings.key_store)
    if device is not None and not key_store_file(settings.key_store, settings.user,
                                                 device).exists():
        raise LostKeys(
            f"the end-to-end encryption keys of the bot's device {device} are missing "
            f"(expected {key_store_file(settings.key_store, settings.user, device)}). "
            "Restore that file from your backup of SWITCHBOARD_MATRIX_KEY_STORE; or, to "
            "start over as a new device (encrypted rooms then share their keys again, "
            "and earlier encrypted messages stay unreadable to the bot), run "
            "`switchboard matrix new-device`")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


async def recent_messages(client: AsyncClient, room: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` message events of ``room``, oldest first, as the server sends them."""
    answer = await client.room_messages(room, start="", limit=limit)
    if isinstance(answer, ErrorResponse):
        raise MatrixError(f"could not read {room}: {answer.message}")
    events = [e.source for e in answer.chunk if e.source.get("type") == "m.room.message"]
    return list(reversed(events))
