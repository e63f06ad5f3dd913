"""In memory: an arriving email's reads and writes, made of the other memory stores."""

from __future__ import annotations

from collections.abc import Sequence

from bot.metering import Transaction
from bot.model import Address, ChatRef, HistoryEntry, Identity
from bot.stores import Arrival
from storage.memory.accounts import MemoryUsage
from storage.memory.conversations import MemoryConversations, MemoryHistory
from storage.memory.operations import MemoryRateLimits
from storage.memory.people import MemoryAddressBook


class MemoryArrivals:
    def __init__(self, conversations: MemoryConversations, history: MemoryHistory,
                 rates: MemoryRateLimits, address_book: MemoryAddressBook,
                 usage: MemoryUsage) -> None:
        self.usage = usage
        self.conversations = conversations
        self.history = history
        self.rates = rates
        self.address_book = address_book

    async def arrive(self, *, message_id: str, answers: Sequence[str],
                     conversation: str | None, new_conversation: str,
                     sender: Address | None, people: Sequence[Address],
                     sender_rate: tuple[int, int], conversation_rate: tuple[int, int],
                     new_places: Sequence[str] = ()) -> Arrival:
        sender_ok = sender is None or await self.rates.hit(f"sender:{sender}", *sender_rate,
                                                           message_id)
        cid, existing = conversation, conversation is not None
        if cid is None:
            *found, itself = await self.conversations.conversations_of([*answers, message_id])
            cid = next((c for c in found if c is not None), None)
            existing = cid is not None
            cid = cid or itself or new_conversation
        conversation_ok = not sender_ok or await self.rates.hit(
            f"conversation:{cid}", *conversation_rate, message_id)
        identities: dict[Address, Identity] = {}
        for address in dict.fromkeys([*([sender] if sender else []), *people]):
            identity = await self.address_book.resolve(address)
            if identity is not None:
                identities[address] = identity
        begun = {}
        if not existing and sender_ok and conversation_ok:
            for place in new_places:
                begun[place] = await self.conversations.begin_post(message_id, place)
        return Arrival(cid, existing, sender_ok, conversation_ok,
                       await self.conversations.threads(cid), identities, begun)

    async def settle(self, *, message_key: str, target_key: str, ref: ChatRef | None,
                     entry: HistoryEntry, usage: Sequence[Transaction] = ()) -> bool:
        message_id = entry.meta.get("message_id", "")
        if ref is not None:
            await self.conversations.record_post(message_key, target_key, ref,
                                                 entry.conversation_id, message_id, entry.id)
        if message_id:
            await self.conversations.remember_message(message_id, entry.conversation_id)
        added = await self.history.append(entry)
        await self.usage.record_all(list(usage))
        return added
