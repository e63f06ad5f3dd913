"""The address book on Redis: one hash indexes every address, one hash per identity."""

from __future__ import annotations

import time
import uuid

from bot.errors import AddressTaken, NotFound, StoreError
from bot.model import Address, Identity, Provenance
from bot.model import Mapping as AddressMapping
from storage.codec import dump_mapping, load_mapping
from storage.connection import RedisBacked, text

# KEYS: index, identity hash. ARGV: address, identity id, anchor address or "", record.
# Checks and writes in one step so two linkers can never both win one address.
_LINK = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] then return {'taken', owner} end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[2] then return {'moved', ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return {'ok', ARGV[2]}
"""

# KEYS: index, identity hash. ARGV: address, identity id.
_UNLINK = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class RedisAddressBook(RedisBacked):
    async def resolve(self, address: Address) -> Identity | None:
        async with self._translated(f"looking up {address}"):
            identity_id = await self.redis.hget(self.keys.address_index(), str(address))
            if identity_id is None:
                return None
            return await self._load(text(identity_id))

    async def identity(self, identity_id: str) -> Identity | None:
        async with self._translated(f"reading identity {identity_id}"):
            return await self._load(identity_id)

    async def _load(self, identity_id: str) -> Identity | None:
        records = await self.redis.hgetall(self.keys.identity(identity_id))
        if not records:
            return None
        mappings = sorted((load_mapping(text(a), text(r)) for a, r in records.items()),
                          key=lambda m: (m.added_at, str(m.address)))
        return Identity(identity_id, tuple(mappings))

    async def link(self, address: Address, *, provenance: Provenance, verified: bool,
                   to: Address | None = None) -> Identity:
        index = self.keys.address_index()
        record = dump_mapping(AddressMapping(address, provenance, verified, time.time()))
        async with self._translated(f"linking {address}"):
            # The anchor's identity can change between our read and the write (an
            # unlink elsewhere); the script notices and we read again.
            for _ in range(5):
                if to is not None:
                    anchor = await self.redis.hget(index, str(to))
                    if anchor is None:
                        raise NotFound(f"{to} is not in the address book")
                    identity_id = text(anchor)
                else:
                    owner = await self.redis.hget(index, str(address))
                    identity_id = text(owner) if owner else uuid.uuid4().hex
                status, owner = await self.redis.eval(
                    _LINK, 2, index, self.keys.identity(identity_id),
                    str(address), identity_id, str(to) if to else "", record)
                if status == "taken":
                    raise AddressTaken(str(address), owner)
                if status == "ok":
                    identity = await self._load(identity_id)
                    assert identity is not None
                    return identity
        raise StoreError(f"linking {address} kept racing with other changes; try again")

    async def unlink(self, address: Address) -> bool:
        index = self.keys.address_index()
        async with self._translated(f"unlinking {address}"):
            owner = await self.redis.hget(index, str(address))
            if owner is None:
                return False
            identity_id = text(owner)
            removed = await self.redis.eval(_UNLINK, 2, index, self.keys.identity(identity_id),
                                            str(address), identity_id)
            return bool(removed)
