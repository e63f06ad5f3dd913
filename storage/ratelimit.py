"""Fixed-window counters in Redis: how often something may happen per window."""

from __future__ import annotations

import time

from storage.connection import RedisBacked

# One step: count (distinct events when an id is given, so a re-read of the same email
# is not counted twice), and start the window's clock. A Lua function, so the arrival
# script (storage/arrivals.py) counts by the same rule.
HIT_FUNCTION = """
local function hit(key, window, event)
  local n
  if event ~= '' then
    redis.call('SADD', key, event)
    n = redis.call('SCARD', key)
  else
    n = redis.call('INCR', key)
  end
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
  return n
end
"""
# KEYS: counter. ARGV: window seconds, event id or "".
_HIT = HIT_FUNCTION + "return hit(KEYS[1], ARGV[1], ARGV[2])\n"


class RedisRateLimits(RedisBacked):
    async def hit(self, name: str, limit: int, window: int, event: str = "") -> bool:
        """Count one event for ``name``; False once ``limit`` events fell in this window.
        Events with the same non-empty ``event`` id count once."""
        bucket = int(time.time()) // window
        async with self._translated("counting for a rate limit"):
            count = await self.redis.eval(_HIT, 1, self.keys.rate(name, bucket), window,
                                           event)
        return int(count) <= limit
