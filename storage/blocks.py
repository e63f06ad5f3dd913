"""Blocked senders and domains, with how many emails each stopped, and the version
every process follows to see a change within a second."""

from __future__ import annotations

import json

from bot.blocks import Block
from storage.connection import RedisBacked, text

# KEYS: blocks, version. ARGV: field, record. Added only if not there.
_ADD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: blocks, stopped, version. ARGV: field.
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""


def _field(scope: str, who: str) -> str:
    return f"{scope}|{who}"


class RedisBlocks(RedisBacked):
    async def version(self) -> int:
        async with self._translated("reading the blocks' version"):
            return int(await self.redis.get(self.keys.blocks_version()) or 0)

    async def all(self) -> tuple[int, list[Block]]:
        async with (self._translated("reading the blocks"),
                    self.redis.pipeline(transaction=True) as pipe):
            pipe.get(self.keys.blocks_version())
            pipe.hgetall(self.keys.blocks())
            pipe.hgetall(self.keys.blocks_stopped())
            version, records, stopped = await pipe.execute()
        counts = {text(k): int(v) for k, v in stopped.items()}
        blocks = []
        for key, record in records.items():
            scope, _, who = text(key).partition("|")
            data = json.loads(text(record))
            blocks.append(Block(scope, who, str(data.get("by", "")), float(data.get("at", 0)),
                                counts.get(text(key), 0)))
        return int(version or 0), blocks

    async def add(self, block: Block) -> bool:
        record = json.dumps({"by": block.by, "at": block.at}, separators=(",", ":"))
        async with self._translated(f"blocking {block.who}"):
            return bool(await self.redis.eval(_ADD, 2, self.keys.blocks(),
                                              self.keys.blocks_version(),
                                              _field(block.scope, block.who), record))

    async def remove(self, scope: str, who: str) -> bool:
        async with self._translated(f"unblocking {who}"):
            return bool(await self.redis.eval(_REMOVE, 3, self.keys.blocks(),
                                              self.keys.blocks_stopped(),
                                              self.keys.blocks_version(), _field(scope, who)))

    async def count(self, scope: str, who: str) -> None:
        async with self._translated("counting a blocked email"):
            await self.redis.hincrby(self.keys.blocks_stopped(), _field(scope, who), 1)
