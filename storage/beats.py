"""How each running process's links are, as it last said (within its time to live)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from storage.connection import RedisBacked, text


class RedisBeats(RedisBacked):
    async def beat(self, process: str, checks: Mapping[str, bool], ttl: int) -> None:
        now = time.time()
        record = json.dumps({"at": now, "until": now + ttl, "checks": dict(checks)})
        async with self._translated("recording this process's health"):
            await self.redis.hset(self.keys.beats(), process, record)

    async def beats(self) -> dict[str, tuple[float, dict[str, bool]]]:
        async with self._translated("reading the processes' health"):
            found = await self.redis.hgetall(self.keys.beats())
        now = time.time()
        alive: dict[str, tuple[float, dict[str, bool]]] = {}
        gone = []
        for process, record in found.items():
            data = json.loads(text(record))
            if data["until"] < now:
                gone.append(text(process))
            else:
                alive[text(process)] = (float(data["at"]), dict(data["checks"]))
        if gone:  # a process that stopped (or crashed) no longer counts
            async with self._translated("forgetting stopped processes"):
                await self.redis.hdel(self.keys.beats(), *gone)
        return alive
