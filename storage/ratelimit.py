"""Fixed-window counters in Redis: how often something may happen per window."""

from __future__ import annotations

import time

from storage.connection import RedisBacked

# KEYS: counter. ARGV: window seconds. One step: count, and start the window's clock.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisRateLimits(RedisBacked):
    async def hit(self, name: str, limit: int, window: int) -> bool:
        """Count one event for ``name``; False once ``limit`` events fell in this window."""
        bucket = int(time.time()) // window
        async with self._translated("counting for a rate limit"):
            count = await self.redis.eval(_HIT, 1, self.keys.rate(name, bucket), window)
        return int(count) <= limit
