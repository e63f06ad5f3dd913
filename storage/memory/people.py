"""In memory: the address book, reply tokens and verification codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid

from bot.errors import AddressTaken, NotFound
from bot.model import Address, Identity, Provenance
from bot.model import Mapping as AddressMapping
from storage.memory.clock import Expiring
from storage.tokens import new_token
from storage.verification import MAX_ATTEMPTS


class MemoryAddressBook:
    def __init__(self) -> None:
        self.index: dict[Address, str] = {}
        self.identities: dict[str, dict[Address, AddressMapping]] = {}

    async def resolve(self, address: Address) -> Identity | None:
        identity_id = self.index.get(address)
        return None if identity_id is None else await self.identity(identity_id)

    async def identity(self, identity_id: str) -> Identity | None:
        records = self.identities.get(identity_id)
        if not records:
            return None
        return Identity(identity_id, tuple(sorted(records.values(),
                                                  key=lambda m: (m.added_at, str(m.address)))))

    async def link(self, address: Address, *, provenance: Provenance, verified: bool,
                   to: Address | None = None) -> Identity:
        if to is not None:
            if to not in self.index:
                raise NotFound(f"{to} is not in the address book")
            identity_id = self.index[to]
        else:
            identity_id = self.index.get(address) or uuid.uuid4().hex
        owner = self.index.get(address)
        if owner is not None and owner != identity_id:
            raise AddressTaken(str(address), owner)
        self.index[address] = identity_id
        self.identities.setdefault(identity_id, {})[address] = AddressMapping(
            address, provenance, verified, time.time())
        found = await self.identity(identity_id)
        assert found is not None
        return found

    async def unlink(self, address: Address) -> bool:
        identity_id = self.index.pop(address, None)
        if identity_id is None:
            return False
        self.identities.get(identity_id, {}).pop(address, None)
        return True


class MemoryTokens:
    def __init__(self) -> None:
        self.tokens: Expiring[tuple[str, Address]] = Expiring()

    async def issue(self, conversation_id: str, recipient: Address, ttl: int) -> str:
        token = new_token()
        self.tokens.set(token, (conversation_id, recipient), ttl)
        return token

    async def resolve(self, token: str) -> tuple[str, Address] | None:
        if not token.isalnum() or len(token) > 64:
            return None
        return self.tokens.get(token.lower())


class MemoryVerifications:
    def __init__(self) -> None:
        self.pending: Expiring[tuple[Address, str, int]] = Expiring()  # email, digest, tries

    @staticmethod
    def _digest(user: Address, code: str) -> str:
        return hashlib.sha256(f"{user}|{code}".encode()).hexdigest()

    async def issue(self, user: Address, email: Address, ttl: int) -> str:
        code = f"{secrets.randbelow(10**6):06d}"
        self.pending.set(str(user), (email, self._digest(user, code), 0), ttl)
        return code

    async def check(self, user: Address, code: str) -> Address | str:
        found = self.pending.get(str(user))
        if found is None:
            return "there is no pending link for you (it may have expired): start with " \
                   "`link <email>`"
        email, digest, tries = found
        if not hmac.compare_digest(digest, self._digest(user, code.strip())):
            if tries + 1 >= MAX_ATTEMPTS:
                self.pending.delete(str(user))
                return "that code is wrong, and that was the last try: start again with " \
                       "`link <email>`"
            self.pending.replace(str(user), (email, digest, tries + 1))
            return "that code is wrong (check the latest email, or start again)"
        self.pending.delete(str(user))
        return email
