"""Shared pacing on Redis: the generic cell rate algorithm (GCRA), one key per paced
name holding its theoretical arrival time, advanced by every reservation in one script on
the server's clock, so every process and host keeps one schedule."""

from __future__ import annotations

from storage.connection import RedisBacked

# KEYS: the name's arrival time (ms). ARGV: interval ms, burst, hold ms (0: a reservation).
# A reservation returns the ms to wait for its turn; a hold pushes the schedule past it.
_PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local slack = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local hold = tonumber(ARGV[3])
if hold > 0 then
  tat = math.max(tat, now + hold + slack)
  redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1000)
  return 0
end
local wait = tat - slack - now
if wait < 0 then wait = 0 end
tat = tat + interval
redis.call('SET', KEYS[1], tat, 'PX', tat - now + 1000)
return wait
"""


class RedisPacer(RedisBacked):
    async def reserve(self, name: str, interval: float, burst: int) -> float:
        async with self._translated("taking a turn to post"):
            wait = await self.redis.eval(_PACE, 1, self.keys.pace(name), int(interval * 1000),
                                         burst, 0)
        return int(wait) / 1000

    async def hold(self, name: str, seconds: float, interval: float, burst: int) -> None:
        async with self._translated("holding posts back"):
            await self.redis.eval(_PACE, 1, self.keys.pace(name), int(interval * 1000), burst,
                                  max(1, int(seconds * 1000)))
