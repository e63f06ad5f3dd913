"""The Redis connection, and the translation of Redis failures into StoreError."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from bot.errors import StoreError, StoreUnavailable
from storage.keys import Keys

Redis = aioredis.Redis
Pipeline = aioredis.client.Pipeline


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def text(value: object) -> str:
    """Replies are str (the client decodes); this narrows redis-py's wider types."""
    return value.decode() if isinstance(value, bytes) else str(value)


def connect(url: str, ca_file: str | None = None) -> Redis:
    """A client for ``url``; no I/O happens until the first command. ``rediss://`` URLs
    speak TLS, verified against ``ca_file`` (or the system's authorities)."""
    if ca_file and url.startswith("rediss://"):
        return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                       socket_timeout=30, health_check_interval=30,
                                       ssl_ca_certs=ca_file)
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                   socket_timeout=30, health_check_interval=30)


@asynccontextmanager
async def translated(url: str, doing: str) -> AsyncIterator[None]:
    """Run Redis commands, turning Redis' exceptions into the store's own family."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"Redis at {redacted(url)} is unreachable while {doing}: {exc}. "
            "Check that redis-server is running and SWITCHBOARD_REDIS_URL points at it."
        ) from exc
    except redis_errors.ResponseError as exc:
        raise StoreError(f"Redis refused a command while {doing}: {exc}") from exc


class RedisBacked:
    """Base of the Redis stores: one client, key builder, and error translation."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        self._url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        return translated(self._url, doing)

