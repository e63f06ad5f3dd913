"""Routes added from chat, the senders admins allowed past their holds, and the version
every process follows to see a change within a second."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from bot.permissions import ThreadReplies
from bot.routes import AttachmentRule, Origin, Route, SenderRule
from storage.connection import RedisBacked, text

# KEYS: routes, version. ARGV: address, record. Added only if the address has none.
_ADD = """
local taken = redis.call('HGET', KEYS[1], ARGV[1])
if taken then return taken end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return false
"""

# KEYS: routes, allowed, version. ARGV: address.
_REMOVE = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if not found then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return found
"""

# KEYS: allowed, version. ARGV: address, sender, how many to keep.
_ALLOW = """
local list = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]) or '[]')
for _, s in ipairs(list) do if s == ARGV[2] then return 0 end end
table.insert(list, ARGV[2])
while #list > tonumber(ARGV[3]) do table.remove(list, 1) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(list))
redis.call('INCR', KEYS[2])
return 1
"""


def dump_route(route: Route) -> str:
    data: dict[str, Any] = asdict(route)
    data.pop("allowed")  # kept beside it, changed on its own
    return json.dumps(data, separators=(",", ":"))


def load_route(record: str) -> Route:
    data = json.loads(record)
    return Route(address=data["address"], network=data["network"], room=data["room"],
                 replies=ThreadReplies(data["replies"]) if data.get("replies") else None,
                 name=str(data.get("name", "")),
                 attachments=AttachmentRule(data.get("attachments", "post")),
                 senders=SenderRule(data.get("senders", "any")),
                 origin=Origin(data.get("origin", "chat")),
                 added_by=str(data.get("added_by", "")),
                 added_at=float(data.get("added_at", 0)),
                 autoreply=str(data.get("autoreply", "")))


class RedisRoutes(RedisBacked):
    async def version(self) -> int:
        async with self._translated("reading the routes' version"):
            return int(await self.redis.get(self.keys.routes_version()) or 0)

    async def all(self) -> tuple[int, list[Route], dict[str, tuple[str, ...]]]:
        async with (self._translated("reading the routes"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.get(self.keys.routes_version())
            pipe.hgetall(self.keys.routes())
            pipe.hgetall(self.keys.routes_allowed())
            version, routes, allowed = await pipe.execute()
        return (int(version or 0), [load_route(text(r)) for r in routes.values()],
                {text(a): tuple(json.loads(text(s))) for a, s in allowed.items()})

    async def add(self, route: Route) -> Route | None:
        async with self._translated(f"adding the route of {route.address}"):
            taken = await self.redis.eval(_ADD, 2, self.keys.routes(),
                                          self.keys.routes_version(), route.address,
                                          dump_route(route))
        return load_route(text(taken)) if taken else None

    async def replace(self, route: Route) -> None:
        async with (self._translated(f"changing the route of {route.address}"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.hset(self.keys.routes(), route.address, dump_route(route))
            pipe.hdel(self.keys.routes_allowed(), route.address)
            pipe.incr(self.keys.routes_version())
            await pipe.execute()

    async def remove(self, address: str) -> Route | None:
        async with self._translated(f"removing the route of {address}"):
            found = await self.redis.eval(_REMOVE, 3, self.keys.routes(),
                                          self.keys.routes_allowed(),
                                          self.keys.routes_version(), address)
        return load_route(text(found)) if found else None

    async def allow(self, address: str, sender: str, keep: int) -> None:
        async with self._translated(f"allowing {sender} for {address}"):
            await self.redis.eval(_ALLOW, 2, self.keys.routes_allowed(),
                                  self.keys.routes_version(), address, sender, keep)
