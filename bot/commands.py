"""The platform-neutral command set behind Slack's `/switchboard …` and Matrix's `!sb …`.

A bridge parses nothing: it hands the text and where it was typed to ``Commands.run``
and shows the Notice it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.flows.reply_by_email import ReplyByEmail, notice_for_email
from bot.flows.reply_in_chat import ReplyInChat, notice_for
from bot.model import Address, ChatRef
from bot.render import render
from bridges.ports import Notice


@dataclass(frozen=True)
class CommandContext:
    user: Address
    user_name: str
    where: ChatRef | None  # the room and thread the command was typed in
    shows: tuple[str, str] | None  # (conversation, entry) the thread is about, if any
    request: str  # unique per command event: a redelivered event is not run twice


class Commands:
    def __init__(self, replies: ReplyInChat, emails: ReplyByEmail,
                 retry_interval: float) -> None:
        self.replies = replies
        self.emails = emails
        self.retry_interval = retry_interval

    async def run(self, text: str, ctx: CommandContext) -> Notice:
        verb, _, rest = text.strip().partition(" ")
        verb = verb.lower()
        rest = rest.strip()
        if verb == "im":
            return await self._im(rest, ctx)
        if verb == "email":
            return await self._email(rest, ctx)
        if verb in ("queue", "cancel", "sendmail"):
            if not rest:
                return Notice(f"`{verb}` needs the delivery id it was offered with, "
                              f"like `{verb} d1234…`")
            outcome = await self.replies.choose(rest.split()[0], verb, ctx.user)
            return notice_for(outcome, self.retry_interval)
        if verb in ("", "help"):
            return Notice(render("chat/help.txt.j2"))
        return Notice(f"Unknown command {verb!r}. " + render("chat/help.txt.j2"))

    async def _email(self, text: str, ctx: CommandContext) -> Notice:
        if ctx.shows is None:
            return Notice("`email <text>` answers by email: type it in the thread of a "
                          "message Switchboard posted.")
        if not text:
            return Notice("`email` needs the text to send, like `email Thanks, will do`.")
        cid, eid = ctx.shows
        outcome = await self.emails.start(replier=ctx.user, replier_name=ctx.user_name,
                                          conversation_id=cid, entry_id=eid, text=text,
                                          request=ctx.request)
        return notice_for_email(outcome)

    async def _im(self, text: str, ctx: CommandContext) -> Notice:
        if ctx.shows is None:
            return Notice("`im <text>` answers an email in chat: type it in the thread of the "
                          "email's post.")
        if not text:
            return Notice("`im` needs the text of your reply, like `im Thanks, will do`.")
        cid, eid = ctx.shows
        outcome = await self.replies.start(replier=ctx.user, replier_name=ctx.user_name,
                                           conversation_id=cid, entry_id=eid, text=text,
                                           request=ctx.request, where=ctx.where)
        return notice_for(outcome, self.retry_interval)
