"""How each running process's links are, as it last said (within its time to live)."""

from __future__ import annotations

import json
import time

from bot.stores import Beat
from storage.connection import RedisBacked, text


class RedisBeats(RedisBacked):
    async def beat(self, process: str, beat: Beat, ttl: int) -> None:
        record = json.dumps({"at": beat.at, "until": time.time() + ttl,
                             "checks": beat.checks, "waits": beat.waits})
        async with self._translated("recording this process's health"):
            await self.redis.hset(self.keys.beats(), process, record)

    async def beats(self) -> dict[str, Beat]:
        async with self._translated("reading the processes' health"):
            found = await self.redis.hgetall(self.keys.beats())
        now = time.time()
        alive: dict[str, Beat] = {}
        gone = []
        for process, record in found.items():
            data = json.loads(text(record))
            if data["until"] < now:
                gone.append(text(process))
            else:
                alive[text(process)] = Beat(float(data["at"]), dict(data["checks"]),
                                            dict(data.get("waits", {})))
        if gone:  # a process that stopped (or crashed) no longer counts
            async with self._translated("forgetting stopped processes"):
                await self.redis.hdel(self.keys.beats(), *gone)
        return alive
