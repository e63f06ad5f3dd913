"""How a Matrix message becomes a Switchboard command: what it is about depends on where
it was typed (a thread of a post, the direct chat with the bot, a plain thread reply)."""

from __future__ import annotations

from bot.commands import CommandContext, Commands
from bot.model import Network
from bot.ports import Notice
from bot.stores import Conversations, MatrixState
from bridges.matrix.listener import CommandEvent


class MatrixCommands:
    """The sync loop's OnCommand: runs each `!sb` command (or plain thread reply)."""

    def __init__(self, commands: Commands, conversations: Conversations,
                 state: MatrixState) -> None:
        self.commands = commands
        self.conversations = conversations
        self.state = state

    async def __call__(self, event: CommandEvent) -> Notice | None:
        shows = None
        dm = event.where.room == await self.state.dm_room(event.sender.value)
        if event.where.thread:
            shows = await self.conversations.shown_in(Network.MATRIX, event.where.room,
                                                      event.where.thread)
        elif not event.plain and dm:
            # In the direct chat with the bot, outside a thread, a command is about the
            # latest message Switchboard delivered there (the reply it answers back).
            shows = await self.conversations.latest_in(Network.MATRIX, event.where.room)
        ctx = CommandContext(user=event.sender, user_name=event.sender_name, where=event.where,
                             shows=shows, request=f"matrix:{event.event_id}",
                             room=None if dm else event.where.room)
        if event.plain:
            return await self.commands.run_plain(event.text, ctx)
        return await self.commands.run(event.text, ctx)
