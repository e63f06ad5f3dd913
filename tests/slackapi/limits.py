"""Slack's documented rate limits, as the local Slack enforces them.

Per method, per workspace (per app): Tier 1 1+ a minute, Tier 2 20+, Tier 3 50+, Tier 4
100+, each with room for bursts; ``chat.postMessage`` (a special tier): about one
message a second per channel, short bursts allowed, and a workspace-wide ceiling of
several hundred a minute. Over a limit: HTTP 429, ``{"ok": false, "error":
"ratelimited"}`` and ``Retry-After`` in whole seconds. Each limit is a token bucket:
``capacity`` calls at once, refilled at ``rate`` a second."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# The tiers of the methods Switchboard calls (Slack's method reference).
TIERS = {
    "apps.connections.open": 1, "auth.test": 4, "chat.postEphemeral": 4, "chat.update": 3,
    "conversations.history": 3, "conversations.info": 3, "conversations.members": 4,
    "conversations.open": 3, "conversations.replies": 3, "files.completeUploadExternal": 4,
    "files.getUploadURLExternal": 4, "oauth.v2.access": 4, "users.getPresence": 3,
    "users.info": 4, "users.lookupByEmail": 3, "views.open": 4, "views.update": 4,
}
POST = "chat.postMessage"
POST_PER_CHANNEL = 1.0  # a second
POST_BURST = 4  # messages at once into one channel before the pace applies
POST_PER_WORKSPACE = 600  # a minute


@dataclass
class Bucket:
    capacity: float
    rate: float  # tokens a second
    tokens: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def wait(self) -> float:
        """0 when a call may go now; else the seconds until one may."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.capacity
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


@dataclass
class Limits:
    on: bool = True
    buckets: dict[tuple[str, ...], Bucket] = field(default_factory=dict)
    throttled: list[tuple[str, str, float]] = field(default_factory=list)  # method, channel

    def _bucket(self, key: tuple[str, ...], capacity: float, rate: float) -> Bucket:
        found = self.buckets.get(key)
        if found is None:
            found = self.buckets[key] = Bucket(capacity, rate)
        return found

    def retry_after(self, team: str, method: str, channel: str = "") -> int:
        """0: the call may go; else the Retry-After (whole seconds, at least 1)."""
        if not self.on:
            return 0
        if method == POST:
            buckets = [self._bucket((team, POST), POST_PER_WORKSPACE, POST_PER_WORKSPACE / 60)]
            if channel:
                buckets.append(self._bucket((team, POST, channel), POST_BURST,
                                            POST_PER_CHANNEL))
        elif method in TIERS:
            limit = PER_MINUTE[TIERS[method]]
            buckets = [self._bucket((team, method), max(limit, 2), limit / 60)]
        else:
            return 0
        wait = max(b.wait() for b in buckets)
        if wait <= 0:
            for bucket in buckets:
                bucket.take()
            return 0
        self.throttled.append((method, channel, time.time()))
        return max(1, math.ceil(wait))

    def reset(self) -> None:
        self.buckets.clear()
        self.throttled.clear()
