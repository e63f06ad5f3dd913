"""Slack's Web API as Switchboard uses it: posting email cards, DMs and files."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import StoreError
from bot.model import Address, AddressError, ChatRef, ChatTarget, Network, Presence
from bot.ports import ChatReply, EmailCard, Notice
from bot.stores import Pacer
from bridges.errors import SlackError
from bridges.slack.blocks import email_card, notice_message, reply_message

log = logging.getLogger(__name__)

# Errors that mean "try again later" rather than "a person must fix something".
TRANSIENT = {"ratelimited", "service_unavailable", "fatal_error", "internal_error",
             "request_timeout"}


def web_client(token: str | None, api_url: str, ca_file: str | None = None) -> AsyncWebClient:
    """A client whose calls share one HTTP session (kept-alive connections): without one,
    slack_sdk opens a session, and a TCP connection, for every call. Made inside the
    event loop it serves; ``SlackNetwork.close`` closes it."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    client = AsyncWebClient(token=token, base_url=api_url, timeout=30, ssl=context,
                            session=session)
    # slack_sdk honours Retry-After on 429 and backs off on 5xx and dropped connections.
    client.retry_handlers.extend([
        AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=3),
        AsyncConnectionErrorRetryHandler(max_retry_count=3),
    ])
    return client


MEMBER_PAGES = 20  # conversations.members pages read (1,000 members each)
ADMIN_KNOWN_FOR = 300.0  # seconds a user's admin flag is believed without asking again
# Seconds a workspace's client is used before its installation is read again: a reinstall
# or an uninstall through another process reaches this one by then (or at the first
# refusal of the old token, whichever comes first).
INSTALL_KNOWN_FOR = 60.0
METADATA_EVENT = "switchboard_email"
# The methods Slack documents as taking application/json (the write methods).
JSON_METHODS = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.update",
                          "conversations.open", "views.open", "views.update", "auth.test"})
# Errors that mean the workspace took its token back (uninstalled, revoked).
REVOKED = frozenset({"invalid_auth", "token_revoked", "account_inactive", "not_authed"})
RECENT_MESSAGES = 200  # where a cut-off post is looked for in a channel
# Posting into one channel: Slack allows about one message a second with short bursts.
# Kept a little under it, for every process at once (the pacer is shared), so that a
# burst of mail waits its turn instead of meeting 429s.
POST_BURST = 3
PATIENCE = 600.0  # seconds a call waits out Slack's 429s before it is given up on


def post_mark(key: str) -> str:
    """What a card's metadata carries of its post key (the key names an email)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]



# A workspace's bot token, from its installation (None: not installed).
TokenSource = Callable[[str], Awaitable[str | None]]


def split_room(room: str) -> tuple[str | None, str]:
    """``T0123/C0456`` -> (``T0123``, ``C0456``); a bare channel id has no team."""
    team, sep, channel = room.rpartition("/")
    return (team or None) if sep else None, channel


class SlackNetwork:
    """Slack as the core sees it. With one pasted bot token every call uses it and rooms
    are bare channel ids; with installs (``tokens`` given) each workspace's calls use its
    own bot token, and rooms name their workspace (``TEAM/CHANNEL``), so nothing of one
    workspace is ever asked of, or posted into, another."""

    network = Network.SLACK

    def __init__(self, client: AsyncWebClient, tokens: TokenSource | None = None,
                 pacer: Pacer | None = None, post_interval: float = 1.0) -> None:
        self.client = client
        self._tokens = tokens
        self.pacer = pacer
        self.post_interval = post_interval
        if pacer is not None:
            # 429s are waited out here, for the method and channel they name (and, for
            # posts, for every process), rather than retried blindly by the client.
            client.retry_handlers[:] = [h for h in client.retry_handlers if not isinstance(
                h, AsyncRateLimitErrorRetryHandler)]
        self._held: dict[tuple[str | None, str], float] = {}  # (team, method) -> until
        self.throttled_seconds = 0.0  # waited for Slack's limits (metrics, status)
        self._clients: dict[str, tuple[AsyncWebClient, float]] = {}  # team -> (client, until)
        self._dm_channels: dict[str, str] = {}
        self._team: str | None = None
        self._admins: dict[str, tuple[bool, float]] = {}  # user -> (admin, known until)

    @property
    def installs(self) -> bool:
        return self._tokens is not None

    def room(self, team: str, channel: str) -> str:
        """How a channel of ``team`` is named to the core."""
        return f"{team}/{channel}" if self.installs else channel

    async def team(self) -> str:
        """The pasted token's workspace id (``auth.test``), asked once."""
        if self._team is None:
            self._team = str((await self._call("auth.test"))["team_id"])
        return self._team

    def forget(self, team: str) -> None:
        """Drop what is kept of an uninstalled workspace."""
        self._clients.pop(team, None)
        for user in [u for u in self._dm_channels if u.startswith(f"{team}/")]:
            del self._dm_channels[user]

    async def close(self) -> None:
        if self.client.session is not None and not self.client.session.closed:
            await self.client.session.close()

    async def customer(self, room: str) -> str | None:
        team, _ = split_room(room)
        if team is not None:
            return f"slack:{team}"
        try:
            return f"slack:{await self.team()}"
        except SlackError as exc:
            log.error("cannot tell which Slack workspace this is: %s", exc)
            return None

    async def _client_for(self, team: str | None) -> AsyncWebClient:
        if self._tokens is None:
            return self.client
        if team is None:
            raise SlackError("with Slack installs, a channel names its workspace "
                             "(TEAM/CHANNEL, like T0123/C0456)", "team_not_named")
        now = time.monotonic()
        kept = self._clients.get(team)
        if kept is not None and kept[1] > now:
            return kept[0]
        token = await self._tokens(team)
        if token is None:
            self.forget(team)
            raise SlackError(f"the Slack workspace {team} has not installed Switchboard "
                             "(or has removed it): install it from /slack/install",
                             "not_installed")
        if kept is not None and kept[0].token == token:
            client = kept[0]
        else:
            client = AsyncWebClient(token=token, base_url=self.client.base_url,
                                    timeout=self.client.timeout, ssl=self.client.ssl,
                                    session=self.client.session)
            client.retry_handlers.extend(self.client.retry_handlers)
        self._clients[team] = (client, now + INSTALL_KNOWN_FOR)
        return client

    async def _with_client(self, team: str | None,
                           work: Callable[[AsyncWebClient], Awaitable[Any]]) -> Any:
        """``work`` with ``team``'s client. A token Slack calls revoked may be one another
        process has since replaced (the workspace reinstalled there): the installation is
        read again, and with a new token the work is tried once more."""
        client = await self._client_for(team)
        try:
            return await work(client)
        except SlackApiError as exc:
            if team is None or str(exc.response.get("error")) not in REVOKED:
                raise
            self.forget(team)
            fresh = await self._client_for(team)  # not_installed if it is gone
            if fresh.token == client.token:
                raise
            log.info("Slack workspace %s was reinstalled: its new token is used", team)
            return await work(fresh)

    async def _call(self, method: str, team: str | None = None, **kwargs: Any) -> Any:
        """One Web API call, with ``team``'s token: a JSON body for the methods that read
        one, form fields for the rest (Slack ignores a JSON body there)."""
        async def call(client: AsyncWebClient) -> Any:
            if method in JSON_METHODS:
                return await client.api_call(method, json=kwargs)
            form = {k: (str(v).lower() if isinstance(v, bool) else str(v))
                    for k, v in kwargs.items()}
            return await client.api_call(method, data=form)

        pace = f"slack:{team or '-'}:{kwargs.get('channel', '')}:post" \
            if method == "chat.postMessage" and self.post_interval > 0 else None
        return await self._paced(method, team, pace, lambda: self._with_client(team, call))

    async def _paced(self, method: str, team: str | None, pace: str | None,
                     work: Callable[[], Awaitable[Any]]) -> Any:
        """``work`` in its turn: a post waits for its channel's turn (shared by every
        process), any call waits out a 429 Slack gave its method (and, for a post, its
        channel), for up to PATIENCE seconds; then the 429 is the caller's."""
        deadline = time.monotonic() + PATIENCE
        while True:
            if self.pacer is not None:
                wait = max(0.0, self._held.get((team, method), 0.0) - time.monotonic())
                if pace is not None:
                    wait = max(wait, await self._turn(pace))
                if wait > 0:
                    self.throttled_seconds += wait
                    await asyncio.sleep(wait)
            try:
                return await self._translated(method, team, work)
            except SlackError as exc:
                if exc.error != "ratelimited" or self.pacer is None \
                        or time.monotonic() > deadline:
                    raise
                retry = exc.retry_after or 1.0
                log.warning("Slack asks to wait %.0f s before the next %s%s", retry, method,
                            " into that channel" if pace else "")
                if pace is not None:
                    await self._hold(pace, retry)
                else:
                    self._held[(team, method)] = time.monotonic() + retry

    async def _turn(self, pace: str) -> float:
        assert self.pacer is not None
        try:
            return await self.pacer.reserve(pace, self.post_interval, POST_BURST)
        except StoreError as exc:
            log.warning("the Slack post schedule could not be read (%s); posting at "
                        "Slack's pace from this process only", exc)
            return self.post_interval

    async def _hold(self, pace: str, seconds: float) -> None:
        assert self.pacer is not None
        try:
            await self.pacer.hold(pace, seconds, self.post_interval, POST_BURST)
        except StoreError:
            await asyncio.sleep(seconds)

    async def _translated(self, method: str, team: str | None,
                          work: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await work()
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            status = exc.response.status_code
            if error in REVOKED and team is not None:
                self.forget(team)
            raise SlackError(f"Slack's {method} answered {error}", error,
                             transient=error in TRANSIENT or status >= 500 or status == 429,
                             retry_after=_retry_after(exc)) from exc
        except (ClientError, OSError, TimeoutError) as exc:
            raise SlackError(f"Slack could not be reached for {method}: {exc}",
                             transient=True) from exc

    def _team_of(self, user: Address) -> str | None:
        return user.value.partition("/")[0] if self.installs else None

    async def dm_channel(self, user: Address) -> str:
        channel = self._dm_channels.get(user.value)
        if channel is None:
            answer = await self._call("conversations.open", self._team_of(user),
                                      users=_user_id(user))
            channel = str(answer["channel"]["id"])
            self._dm_channels[user.value] = channel
        return channel

    async def _channel_of(self, target: ChatTarget) -> tuple[str | None, str]:
        """The workspace (None: the pasted token's) and the channel a target is."""
        if target.room:
            return split_room(target.room)
        assert target.user is not None
        return self._team_of(target.user), await self.dm_channel(target.user)

    async def post_email(self, target: ChatTarget, card: EmailCard, *,
                         thread: ChatRef | None, key: str, resume: bool = False) -> ChatRef:
        """The card, then its files into its thread. Slack has no idempotency key, so the
        card carries ``key`` (hashed) in its message metadata: after an attempt that was
        cut off, the card is looked for by it, and only the files not yet in the thread
        are uploaded."""
        team, channel = await self._channel_of(target)
        room = f"{team}/{channel}" if team else channel
        rendered = email_card(card)
        mark = post_mark(key)
        files = [(a.filename, a.content) for a in card.attachments if a.content]
        if rendered.full_text is not None:
            files.append(("message.txt", rendered.full_text.encode()))
        found = await self._find_card(team, channel, thread, mark) if resume else None
        if found is not None:
            ref = ChatRef(Network.SLACK, room, found, thread.thread if thread else found)
            files = await self._not_yet_uploaded(team, channel, ref, files)
            log.info("an interrupted post of %s was found in Slack; %d file(s) left to upload",
                     card.entry_id, len(files))
        else:
            kwargs: dict[str, Any] = {
                "channel": channel, "text": rendered.fallback, "blocks": rendered.blocks,
                "unfurl_links": False, "unfurl_media": False,
                "metadata": {"event_type": METADATA_EVENT, "event_payload": {
                    "conversation": card.conversation_id, "entry": card.entry_id,
                    "key": mark}}}
            if thread is not None:
                kwargs["thread_ts"] = thread.thread
            answer = await self._call("chat.postMessage", team, **kwargs)
            ts = str(answer["ts"])
            ref = ChatRef(Network.SLACK, room, ts, thread.thread if thread else ts)
        for filename, content in files:
            await self.upload(room, ref.thread, filename, content)
        return ref

    async def _find_card(self, team: str | None, channel: str, thread: ChatRef | None,
                         mark: str) -> str | None:
        """The ts of the card marked ``mark``: in the thread it went to, else among the
        channel's latest messages (a cut-off post is a recent one)."""
        if thread is not None:
            answer = await self._call("conversations.replies", team, channel=channel,
                                      ts=thread.thread, include_all_metadata=True, limit=200)
        else:
            answer = await self._call("conversations.history", team, channel=channel,
                                      include_all_metadata=True, limit=RECENT_MESSAGES)
        for message in answer.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("key") == mark:
                return str(message["ts"])
        return None

    async def _not_yet_uploaded(self, team: str | None, channel: str, ref: ChatRef,
                                files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        answer = await self._call("conversations.replies", team, channel=channel, ts=ref.thread,
                                  limit=1000)
        there = Counter(str(f.get("name") or f.get("title") or "")
                        for m in answer.get("messages", []) if float(m["ts"]) > float(ref.message)
                        for f in m.get("files") or [])
        left = []
        for filename, content in files:
            if there[filename] > 0:
                there[filename] -= 1
            else:
                left.append((filename, content))
        return left

    async def upload(self, room: str, thread_ts: str, filename: str, content: bytes) -> str:
        """Slack's external upload: ask for a URL, send the bytes, complete into the thread."""
        team, channel = split_room(room)

        async def upload() -> Any:
            return await self._with_client(team, lambda client: client.files_upload_v2(
                channel=channel, thread_ts=thread_ts, filename=filename, content=content,
                title=filename))

        try:
            answer = await self._paced("files.completeUploadExternal", team, None, upload)
        except SlackError as exc:
            raise SlackError(f"Slack refused the upload of {filename}: {exc.error}"
                             if exc.error else f"uploading {filename} to Slack failed: {exc}",
                             exc.error, transient=exc.transient,
                             retry_after=exc.retry_after) from exc
        return str(answer["file"]["id"]) if answer.get("file") else ""

    async def is_member(self, room: str, user: Address) -> bool:
        user_id = _user_id(user)
        cursor = ""
        for _ in range(MEMBER_PAGES):
            team, channel = split_room(room)
            answer = await self._call("conversations.members", team, channel=channel, limit=1000,
                                      **({"cursor": cursor} if cursor else {}))
            if user_id in answer.get("members", []):
                return True
            cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return False
        return False

    async def is_room_admin(self, room: str, user: Address) -> bool:
        """A workspace admin or owner of the channel's workspace (Slack has no channel
        admins in its API); a guest or a member of another workspace never is."""
        team, _ = split_room(room)
        if team is not None and self._team_of(user) != team:
            return False
        return await self._is_admin(user)

    async def _is_admin(self, user: Address) -> bool:
        now = time.monotonic()
        known = self._admins.get(user.value)
        if known is not None and known[1] > now:
            return known[0]
        try:
            answer = await self._call("users.info", self._team_of(user), user=_user_id(user))
        except SlackError as exc:
            if exc.error == "user_not_found":
                return False
            raise
        found = answer["user"]
        admin = bool((found.get("is_admin") or found.get("is_owner")
                      or found.get("is_primary_owner")) and not found.get("deleted")
                     and not found.get("is_restricted") and not found.get("is_bot"))
        self._admins[user.value] = (admin, now + ADMIN_KNOWN_FOR)
        return admin

    async def cannot_post(self, room: str) -> str | None:
        team, channel = split_room(room)
        try:
            answer = await self._call("conversations.info", team, channel=channel)
        except SlackError as exc:
            if exc.error != "channel_not_found":
                raise
            return ("Switchboard cannot see this channel (a private channel it is not in); "
                    "invite it first (`/invite @Switchboard`)")
        if not (answer.get("channel") or {}).get("is_member"):
            return "Switchboard is not in this channel; invite it first (`/invite @Switchboard`)"
        return None

    async def room_admins(self, room: str, limit: int) -> list[Address]:
        team, channel = split_room(room)
        answer = await self._call("conversations.members", team, channel=channel,
                                  limit=min(limit, 1000))
        workspace = team or await self.team()
        found = []
        for member in list(answer.get("members", []))[:limit]:
            user = Address.slack(workspace, str(member))
            if await self._is_admin(user):
                found.append(user)
        return found

    async def presence(self, user: Address) -> Presence:
        try:
            answer = await self._call("users.getPresence", self._team_of(user),
                                      user=_user_id(user))
        except SlackError as exc:
            log.warning("Slack presence of %s unknown: %s", user, exc)
            return Presence.UNKNOWN
        return {"active": Presence.PRESENT, "away": Presence.AWAY}.get(
            str(answer.get("presence")), Presence.UNKNOWN)

    async def find_user(self, email: Address, within: Address | None = None) -> Address | None:
        team = None
        if self.installs:
            if within is None or within.network is not Network.SLACK:
                return None  # which workspace to ask is the replier's; there is none
            team = self._team_of(within)
        try:
            answer = await self._call("users.lookupByEmail", team, email=email.value)
        except SlackError as exc:
            if exc.error == "users_not_found":
                return None
            raise
        user = answer["user"]
        if user.get("deleted") or user.get("is_bot"):
            return None
        return Address.slack(str(user["team_id"]), str(user["id"]))

    async def find_email(self, user: Address) -> Address | None:
        try:
            answer = await self._call("users.info", self._team_of(user), user=_user_id(user))
        except SlackError as exc:
            if exc.error == "user_not_found":
                return None
            raise
        email = (answer["user"].get("profile") or {}).get("email")
        try:
            return Address.email(str(email)) if email else None
        except AddressError:
            return None

    async def send_reply(self, user: Address, reply: ChatReply, key: str) -> ChatRef:
        channel = await self.dm_channel(user)
        blocks, fallback = reply_message(reply)
        team = self._team_of(user)
        answer = await self._call("chat.postMessage", team, channel=channel, text=fallback,
                                  blocks=blocks, unfurl_links=False)
        ts = str(answer["ts"])
        return ChatRef(Network.SLACK, f"{team}/{channel}" if team else channel, ts, ts)

    async def notify(self, user: Address, notice: Notice, where: ChatRef | None) -> None:
        blocks, fallback = notice_message(notice)
        team, channel = split_room(where.room) if where is not None else (None, "")
        if where is not None and where.network is Network.SLACK and channel \
                and not channel.startswith("D"):
            try:
                await self._call("chat.postEphemeral", team, channel=channel, user=_user_id(user),
                                 text=fallback, blocks=blocks,
                                 **({"thread_ts": where.thread} if where.thread else {}))
                return
            except SlackError as exc:
                if exc.transient:
                    raise
                log.info("ephemeral notice to %s failed (%s); sending a DM", user, exc.error)
        channel = await self.dm_channel(user)
        await self._call("chat.postMessage", self._team_of(user), channel=channel,
                         text=fallback, blocks=blocks)


def _retry_after(exc: SlackApiError) -> float | None:
    """The seconds a 429 asks to wait (Retry-After), if it said."""
    try:
        return float(exc.response.headers.get("Retry-After", ""))
    except (TypeError, ValueError, AttributeError):
        return None


def _user_id(user: Address) -> str:
    return user.value.partition("/")[2]
