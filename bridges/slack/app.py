"""Slack's side of the conversation: Bolt handlers for buttons, the reply modal, the
choices offered when someone is away, and the slash command.

Each handler acks within Slack's 3 seconds and then calls a flow in ``bot/``; no
decision is taken here.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import CommandContext, Commands
from bot.errors import BridgeError
from bot.flows.outcomes import CannotReply, notice_for
from bot.flows.reply_by_email import ReplyByEmail
from bot.flows.reply_in_chat import ReplyInChat
from bot.model import Address, AddressError, ChatRef, Network
from bot.ports import Notice
from bridges.slack.blocks import (
    BLOCK_DOMAIN,
    BLOCK_SENDER,
    FORWARD,
    REPLY_ALL,
    REPLY_BY_EMAIL,
    REPLY_IN_CHAT,
    forward_modal,
    notice_message,
    reply_modal,
)
from bridges.slack.installs import InstallationStore, StateStore
from bridges.slack.manifest import (
    BOT_SCOPES,
    INSTALL_PATH,
    REDIRECT_PATH,
    SHORTCUT,
    SLASH_COMMAND,
)
from bridges.slack.web import SlackNetwork

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Submission:
    """A submitted compose modal: who, about what, the text, and where they were."""

    user: Address
    name: str
    conversation: str
    entry: str
    text: str
    request: str
    where: ChatRef | None
    reply_all: bool = False  # *Reply all*: the author and everyone on the email's To and Cc


def _team(body: dict[str, Any]) -> str:
    """The workspace a request comes from (where the app is installed, not the user's home
    workspace, which differs for a Slack Connect guest)."""
    return str((body.get("team") or {}).get("id") or body.get("team_id")
               or (body.get("user") or {}).get("team_id") or "")


def _user(body: dict[str, Any]) -> tuple[Address, str]:
    user = body["user"]
    team = user.get("team_id") or (body.get("team") or {}).get("id") or body.get("team_id")
    return Address.slack(str(team), str(user["id"])), str(user.get("name") or user["id"])


@dataclass(frozen=True)
class OAuthSetup:
    """What the OAuth install flow needs: the app's credentials and where Slack is."""

    client_id: str
    client_secret: str
    redirect_uri: str  # our /slack/oauth_redirect, as the app's settings list it
    authorize_url: str
    installations: InstallationStore
    states: StateStore


class SlackApp:
    def __init__(self, *, signing_secret: str | None, client: AsyncWebClient,
                 network: SlackNetwork, replies: ReplyInChat, emails: ReplyByEmail,
                 commands: Commands, retry_interval: float, oauth: OAuthSetup | None = None
                 ) -> None:
        self.network = network
        self.replies = replies
        self.emails = emails
        self.commands = commands
        self.retry_interval = retry_interval
        self.oauth = oauth
        self._busy: set[asyncio.Task[Any]] = set()
        settings = None if oauth is None else AsyncOAuthSettings(
            client_id=oauth.client_id, client_secret=oauth.client_secret, scopes=BOT_SCOPES,
            redirect_uri=oauth.redirect_uri, install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_PATH, authorization_url=oauth.authorize_url,
            installation_store=oauth.installations, state_store=oauth.states,
            installation_store_bot_only=True, user_token_resolution="actor")
        # Without a signing secret (Socket Mode) no HTTP endpoint takes Slack's requests,
        # so there is nothing to verify; Bolt checks every HTTP request otherwise.
        self.bolt = AsyncApp(signing_secret=signing_secret or "socket-mode-only",
                             client=client, oauth_settings=settings,
                             process_before_response=False,
                             raise_error_for_unhandled_request=False)
        self.bolt.event("app_uninstalled")(self.uninstalled)
        self.bolt.event("tokens_revoked")(self.uninstalled)
        self.bolt.event("message")(self.thread_message)
        self.bolt.action(REPLY_IN_CHAT)(self.open_reply)
        self.bolt.view("reply_in_chat_modal")(self.submit_reply)
        self.bolt.action(re.compile(r"^delivery_(queue|cancel|sendmail)$"))(self.choose)
        self.bolt.action(re.compile(r"^held_(post|discard|allow|block)$"))(self.decide)
        self.bolt.action(re.compile(rf"^({BLOCK_SENDER}|{BLOCK_DOMAIN})$"))(self.block_from_card)
        self.bolt.action(REPLY_BY_EMAIL)(self.open_email)
        self.bolt.view("reply_by_email_modal")(self.submit_email)
        self.bolt.action("query_search")(self.next_page)
        self.bolt.action(REPLY_ALL)(self.open_reply_all)
        self.bolt.action(FORWARD)(self.open_forward)
        self.bolt.view("forward_modal")(self.submit_forward)
        self.bolt.shortcut(SHORTCUT)(self.open_email_shortcut)
        self.bolt.command(SLASH_COMMAND)(self.slash_command)

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Marks the listener's task as in-flight work, which a graceful stop waits for."""
        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._busy.discard(task)

    async def drain(self, grace: float) -> None:
        """Wait for the work Slack's requests started (it runs after their ack)."""
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=grace)

    def _where(self, body: dict[str, Any]) -> ChatRef | None:
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or ""
        if not channel:
            return None
        thread = (body.get("message") or {}).get("thread_ts") or ts
        return ChatRef(Network.SLACK, self.network.room(_team(body), str(channel)), str(ts),
                       str(thread))

    async def handle(self, request: web.Request) -> web.Response:
        response = await self.bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def install(self, request: web.Request) -> web.Response:
        """``/slack/install`` (the admin's way in) and ``/slack/oauth_redirect`` (Slack's
        way back, with the code and the state to check)."""
        flow = self.bolt.oauth_flow
        if flow is None:
            return web.Response(status=404, text="this Switchboard serves one workspace")
        bolt_request = await to_bolt_request(request)
        if request.path == REDIRECT_PATH:
            response = await flow.handle_callback(bolt_request)
        else:
            response = await flow.handle_installation(bolt_request)
        return await to_aiohttp_response(response)

    async def uninstalled(self, ack: AsyncAck, body: dict[str, Any],
                          event: dict[str, Any]) -> None:
        """``app_uninstalled``, or ``tokens_revoked`` naming the bot's token: the workspace's
        installation and what is kept of it go; its routes refuse mail from now on."""
        await ack()
        team = _team(body)
        if event.get("type") == "tokens_revoked" and not (event.get("tokens") or {}).get("bot"):
            return  # only user tokens, which Switchboard never keeps
        if self.oauth is None:
            log.error("Slack says the app was removed from workspace %s (%s): the pasted bot "
                      "token no longer works; reinstall the app and set the new token", team,
                      event.get("type"))
            return
        await self.oauth.installations.async_delete_all(enterprise_id=None, team_id=team)
        self.network.forget(team)

    async def thread_message(self, ack: AsyncAck, body: dict[str, Any],
                             event: dict[str, Any]) -> None:
        """A person's message in the thread of one of Switchboard's posts: what it does
        is the room's rule (its route's ``replies``): stays in chat, or answers by
        email. Other messages (top level, edits, bots, ours) are not looked at."""
        await ack()
        thread = str(event.get("thread_ts") or "")
        if (event.get("subtype") or event.get("bot_id") or not thread
                or thread == event.get("ts") or not event.get("user")):
            return
        conversations = self.commands.conversations
        if conversations is None:
            return
        with self._working():
            team = _team(body)
            room = self.network.room(team, str(event["channel"]))
            shows = await conversations.shown_in(Network.SLACK, room, thread)
            if shows is None:
                return  # a thread of people's own, not an email's
            user = Address.slack(str(event.get("user_team") or team), str(event["user"]))
            where = ChatRef(Network.SLACK, room, str(event.get("ts", "")), thread)
            ctx = CommandContext(user=user, user_name=str(event["user"]), where=where,
                                 shows=shows, request=f"slack-event:{body.get('event_id')}",
                                 room=room)
            notice = await self.commands.run_plain(html.unescape(str(event.get("text", ""))),
                                                   ctx)
            if notice is not None:
                await self.network.notify(user, notice, where)

    async def _tell(self, user: Address, notice: Notice, where: ChatRef | None,
                    respond: AsyncRespond | None = None) -> None:
        if respond is not None:
            blocks, text = notice_message(notice)
            await respond(text=text, blocks=blocks, replace_original=True)
            return
        await self.network.notify(user, notice, where)

    def _compose_meta(self, body: dict[str, Any], **more: object) -> tuple[str, str, str, str]:
        """(conversation, entry, the modal's metadata, the subject line) of a button on
        one of our posts: the modal carries what the button stood for and where it was
        pressed."""
        cid, _, eid = str(body["actions"][0]["value"]).partition("/")
        where = self._where(body)
        meta = json.dumps({"c": cid, "e": eid, "w": [where.room, where.message, where.thread]
                           if where else None, **more})
        # The message's text as Slack holds it is mrkdwn-escaped; the modal escapes once.
        text = html.unescape(str((body.get("message") or {}).get("text", ""))
                             ).removeprefix("Email from ")
        return cid, eid, meta, text

    async def _open_compose(self, body: dict[str, Any], client: AsyncWebClient,
                            by_email: bool) -> None:
        with self._working():
            _, _, meta, text = self._compose_meta(body)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=reply_modal(meta, text, by_email=by_email))

    async def open_reply_all(self, ack: AsyncAck, body: dict[str, Any],
                             client: AsyncWebClient) -> None:
        """*Reply all*: the modal shows who the email will reach before it is sent."""
        await ack()
        with self._working():
            cid, eid, meta, text = self._compose_meta(body, all=True)
            user, _ = _user(body)
            answered = await self.emails.answered(cid, eid)
            chosen = await self.emails.recipients(user, answered, reply_all=True) \
                if answered is not None else CannotReply("that email is not one Switchboard "
                                                         "knows")
            if isinstance(chosen, CannotReply):
                await self._tell(user, notice_for(chosen), self._where(body))
                return
            shown = f"*To:* {chosen.to.value}" + (
                f"\n*Cc:* {', '.join(a.value for a in chosen.cc)}" if chosen.cc
                else "\n(nobody else was on this email)")
            await client.views_open(trigger_id=body["trigger_id"], view=reply_modal(
                meta, text, by_email=True, recipients=shown, title="Reply all by email"))

    async def open_forward(self, ack: AsyncAck, body: dict[str, Any],
                           client: AsyncWebClient) -> None:
        await ack()
        with self._working():
            _, _, meta, text = self._compose_meta(body)
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=forward_modal(meta, text))

    async def submit_forward(self, ack: AsyncAck, body: dict[str, Any],
                             view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        typed = (values.get("to", {}).get("text", {}).get("value") or "").strip()
        try:
            to = Address.email(typed)
        except AddressError as exc:
            await ack(response_action="errors", errors={"to": f"{exc}; type one address"})
            return
        await ack()
        meta = json.loads(view["private_metadata"])
        user, name = _user(body)
        where = ChatRef(Network.SLACK, *meta["w"]) if meta.get("w") else None
        note = values.get("reply", {}).get("text", {}).get("value") or ""
        with self._working():
            try:
                outcome = await self.emails.forward(
                    replier=user, replier_name=name, conversation_id=meta["c"],
                    entry_id=meta["e"], to=to, note=note, request=f"slack-view:{view['id']}")
            except BridgeError as exc:
                outcome = CannotReply(str(exc))
            await self._tell(user, notice_for(outcome), where)

    async def open_reply(self, ack: AsyncAck, body: dict[str, Any],
                         client: AsyncWebClient) -> None:
        await ack()
        await self._open_compose(body, client, by_email=False)

    async def _submitted(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                         empty: str) -> Submission | None:
        """Ack a compose modal (refusing an empty one in the modal itself) and read it."""
        text = (view["state"]["values"].get("reply", {}).get("text", {}).get("value") or "")
        if not text.strip():
            await ack(response_action="errors", errors={"reply": empty})
            return None
        await ack()
        meta = json.loads(view["private_metadata"])
        user, name = _user(body)
        where = ChatRef(Network.SLACK, *meta["w"]) if meta.get("w") else None
        return Submission(user, name, meta["c"], meta["e"], text, f"slack-view:{view['id']}",
                          where, bool(meta.get("all")))

    async def submit_reply(self, ack: AsyncAck, body: dict[str, Any],
                           view: dict[str, Any]) -> None:
        s = await self._submitted(ack, body, view, "Write the reply to send.")
        if s is None:
            return
        with self._working():
            outcome = await self.replies.start(
                replier=s.user, replier_name=s.name, conversation_id=s.conversation,
                entry_id=s.entry, text=s.text, request=s.request, where=s.where)
            await self._tell(s.user, notice_for(outcome, self.retry_interval), s.where)

    async def choose(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                     respond: AsyncRespond) -> None:
        await ack()
        with self._working():
            user, _ = _user(body)
            choice = str(action["action_id"]).removeprefix("delivery_")
            outcome = await self.replies.choose(str(action["value"]), choice, user)
            ephemeral = bool((body.get("container") or {}).get("is_ephemeral"))
            await self._tell(user, notice_for(outcome, self.retry_interval), self._where(body),
                             respond if ephemeral else None)

    async def decide(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                     respond: AsyncRespond) -> None:
        """*Post anyway* / *Discard* / *Allow this sender* on a held email's notice: the
        command of the same name; the notice is replaced by what was done."""
        await ack()
        with self._working():
            user, name = _user(body)
            verb = str(action["action_id"]).removeprefix("held_")
            ctx = CommandContext(user=user, user_name=name, where=None, shows=None,
                                 request=f"slack-action:{body.get('trigger_id', '')}")
            notice = await self.commands.run(f"{verb} {action['value']}", ctx)
            blocks, text = notice_message(notice)
            await respond(text=text, blocks=blocks, replace_original=True)

    async def block_from_card(self, ack: AsyncAck, body: dict[str, Any],
                              action: dict[str, Any]) -> None:
        """*Block sender* / *Block domain* on an email's card: `block` with its sender's
        address or domain, typed in the card's channel (its admins may)."""
        await ack()
        with self._working():
            user, name = _user(body)
            where = self._where(body)
            cid, _, eid = str(action["value"]).partition("/")
            entry = await self.emails.answered(cid, eid)
            if entry is None or entry.sender.network is not Network.EMAIL:
                await self._tell(user, Notice("That email is no longer in the history."), where)
                return
            sender = entry.sender.value
            who = "@" + sender.rpartition("@")[2] if action["action_id"] == BLOCK_DOMAIN \
                else sender
            ctx = CommandContext(user=user, user_name=name, where=None, shows=None,
                                 request=f"slack-action:{body.get('trigger_id', '')}",
                                 room=where.room if where else None)
            await self._tell(user, await self.commands.run(f"block {who}", ctx), where)

    async def next_page(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                        respond: AsyncRespond) -> None:
        """*More results* under a search's answer: the next page, in its place."""
        await ack()
        with self._working():
            user, name = _user(body)
            ctx = CommandContext(user=user, user_name=name, where=None, shows=None,
                                 request=f"slack-action:{body.get('trigger_id', '')}")
            notice = await self.commands.run(f"search {action['value']}", ctx)
            blocks, text = notice_message(notice)
            await respond(text=text, blocks=blocks, replace_original=True)

    async def open_email(self, ack: AsyncAck, body: dict[str, Any],
                         client: AsyncWebClient) -> None:
        await ack()
        await self._open_compose(body, client, by_email=True)

    async def open_email_shortcut(self, ack: AsyncAck, body: dict[str, Any],
                                  client: AsyncWebClient) -> None:
        """*Reply by email* on any message: the message is kept, then answered."""
        await ack()
        with self._working():
            message = body["message"]
            channel = str(body["channel"]["id"])
            team = _team(body)
            room = self.network.room(team, channel)
            shown = await self.emails.answerable(
                network=Network.SLACK, room=room, message=str(message["ts"]),
                author=Address.slack(team, str(message.get("user") or "")),
                text=str(message.get("text", "")), at=float(str(message["ts"]).split(".")[0]),
                thread=str(message.get("thread_ts") or message["ts"]))
            meta = json.dumps({"c": shown[0], "e": shown[1],
                               "w": [room, message["ts"], message.get("thread_ts")
                                     or message["ts"]]})
            await client.views_open(trigger_id=body["trigger_id"],
                                    view=reply_modal(meta, html.unescape(
                                        str(message.get("text", "")))[:80],
                                                     by_email=True))

    async def submit_email(self, ack: AsyncAck, body: dict[str, Any],
                           view: dict[str, Any]) -> None:
        s = await self._submitted(ack, body, view, "Write the email to send.")
        if s is None:
            return
        with self._working():
            outcome = await self.emails.start(
                replier=s.user, replier_name=s.name, conversation_id=s.conversation,
                entry_id=s.entry, text=s.text, request=s.request, reply_all=s.reply_all)
            await self._tell(s.user, notice_for(outcome), s.where)

    async def slash_command(self, ack: AsyncAck, command: dict[str, Any],
                            respond: AsyncRespond) -> None:
        await ack()
        with self._working():
            team = str(command["team_id"])
            user = Address.slack(team, str(command["user_id"]))
            channel = str(command.get("channel_id") or "")
            # A direct chat (D…) is no channel to route to or report on.
            room = self.network.room(team, channel) if channel[:1] in ("C", "G") else None
            ctx = CommandContext(user=user, user_name=str(command.get("user_name", "")),
                                 where=None, shows=None,
                                 request=f"slack-cmd:{command.get('trigger_id', '')}",
                                 room=room)
            notice = await self.commands.run(str(command.get("text", "")), ctx)
            blocks, text = notice_message(notice)
            await respond(text=text, blocks=blocks, response_type="ephemeral")
