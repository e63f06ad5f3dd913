"""Fixed-window counters in Redis: how often something may happen per window."""

from __future__ import annotations

import time

from storage.connection import RedisBacked

# KEYS: counter. ARGV: window seconds, event id or "". One step: count (distinct events
# when an id is given, so a re-read of the same email is not counted twice), and start
# the window's clock.
_HIT = """
local n
if ARGV[2] ~= '' then
  redis.call('SADD', KEYS[1], ARGV[2])
  n = redis.call('SCARD', KEYS[1])
else
  n = redis.call('INCR', KEYS[1])
end
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisRateLimits(RedisBacked):
    async def hit(self, name: str, limit: int, window: int, event: str = "") -> bool:
        """Count one event for ``name``; False once ``limit`` events fell in this window.
        Events with the same non-empty ``event`` id count once."""
        bucket = int(time.time()) // window
        async with self._translated("counting for a rate limit"):
            count = await self.redis.eval(_HIT, 1, self.keys.rate(name, bucket), window,
                                           event)
        return int(count) <= limit
