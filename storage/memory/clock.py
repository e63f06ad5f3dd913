"""Values that expire, as Redis keys with a TTL do."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")


class Expiring(Generic[V]):
    def __init__(self) -> None:
        self._values: dict[str, tuple[V, float | None]] = {}

    def set(self, key: str, value: V, ttl: float | None = None) -> None:
        self._values[key] = (value, None if ttl is None else time.monotonic() + ttl)

    def set_new(self, key: str, value: V, ttl: float | None = None) -> bool:
        """SET NX: only when the key is not there (or expired)."""
        if self.get(key) is not None:
            return False
        self.set(key, value, ttl)
        return True

    def replace(self, key: str, value: V) -> None:
        """A new value, the same expiry."""
        _, until = self._values[key]
        self._values[key] = (value, until)

    def expire(self, key: str, ttl: float) -> None:
        value, _ = self._values[key]
        self._values[key] = (value, time.monotonic() + ttl)

    def get(self, key: str) -> V | None:
        found = self._values.get(key)
        if found is None:
            return None
        value, until = found
        if until is not None and time.monotonic() >= until:
            del self._values[key]
            return None
        return value

    def delete(self, key: str) -> bool:
        return self._values.pop(key, None) is not None
