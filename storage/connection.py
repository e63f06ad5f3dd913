"""The Redis connection, and the translation of Redis failures into StoreError."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from bot.errors import StoreError, StoreUnavailable
from bot.settings import RedisTarget
from storage.keys import Keys

# A failover takes the sentinels a few seconds (the primary's silence, then a vote): a
# command meeting one waits it out, about 30 s in all (backoff 50 ms doubling to 1 s).
FAILOVER_PATIENCE_TRIES = 36
# What a failover looks like to a client: the old primary gone, or answering as a replica
# (the sentinel-managed connection turns READONLY into a reconnection).
RETRIED = [redis_errors.ConnectionError, redis_errors.TimeoutError]

log = logging.getLogger(__name__)
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


def target_of(where: RedisTarget | str, ca_file: str | None = None) -> RedisTarget:
    return where if isinstance(where, RedisTarget) else RedisTarget(where, ca_file=ca_file)


def describe(where: RedisTarget | str) -> str:
    """Where the store is, for messages (no password)."""
    target = target_of(where)
    if not target.sentinels:
        return f"Redis at {redacted(target.url)}"
    return (f"the Redis primary {target.master!r} of the sentinels "
            + ",".join(f"{h}:{p}" for h, p in target.sentinels))


def connection_options(target: RedisTarget, *, decode: bool) -> dict[str, Any]:
    """What every connection to the store is opened with (the async and the sync
    client's, so RQ's connections meet a failover as the store's do)."""
    options: dict[str, Any] = {"decode_responses": decode, "socket_connect_timeout": 5,
                               "socket_timeout": 30, "health_check_interval": 30}
    if target.url.startswith("rediss://"):
        options["ssl"] = True
        if target.ca_file:
            options["ssl_ca_certs"] = target.ca_file
    if target.sentinels:
        parts = urlsplit(target.url)
        options.update(password=parts.password, username=parts.username or None,
                       db=int(parts.path.strip("/") or 0))
    return options


def sentinel_options(target: RedisTarget) -> dict[str, Any]:
    """How the sentinels themselves are asked (quickly: one that is down is skipped)."""
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2,
                               "password": target.sentinel_password}
    if target.url.startswith("rediss://"):
        options["ssl"] = True
        if target.ca_file:
            options["ssl_ca_certs"] = target.ca_file
    return options


def connect(where: RedisTarget | str, ca_file: str | None = None) -> Redis:
    """A client for the store; no I/O happens until the first command. ``rediss://``
    URLs speak TLS, verified against the CA file (or the system's authorities). Through
    Sentinel, the client asks the sentinels for the primary, and asks again when it
    fails or turns out to be a replica (after a failover); a command meeting that is
    tried again, for up to FAILOVER_PATIENCE seconds, before the caller hears of it."""
    target = target_of(where, ca_file)
    options = connection_options(target, decode=True)
    if not target.sentinels:
        return aioredis.Redis.from_url(target.url, **options)
    sentinel = AsyncSentinel(list(target.sentinels),  # type: ignore[no-untyped-call]
                             sentinel_kwargs=sentinel_options(target))
    client: Redis = sentinel.master_for(target.master, redis_class=aioredis.Redis,
                                        retry=failover_retry(), retry_on_error=RETRIED,
                                        **options)
    return client


def failover_retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), FAILOVER_PATIENCE_TRIES)


@asynccontextmanager
async def translated(where: str, doing: str) -> AsyncIterator[None]:
    """Run Redis commands, turning Redis' exceptions into the store's own family.
    ``where``: the store, as `describe` says it."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"{where} is unreachable while {doing}: {exc}. Check that redis-server (and "
            "the sentinels, with SWITCHBOARD_REDIS_SENTINELS) is running and "
            "SWITCHBOARD_REDIS_URL points at it."
        ) from exc
    except redis_errors.ResponseError as exc:
        raise StoreError(f"Redis refused a command while {doing}: {exc}") from exc


def where_of(client: Redis) -> str:
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return f"the Redis primary {pool.service_name!r} (through Sentinel)"
    kwargs = pool.connection_kwargs
    return f"Redis at redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


class RedisBacked:
    """Base of the Redis stores: one client, key builder, and error translation."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._where = where_of(client)

    def _translated(self, doing: str) -> AbstractAsyncContextManager[None]:
        return translated(self._where, doing)

    async def _durable(self, doing: str) -> None:
        """After a write something is acknowledged on (an email accepted, a reply
        queued): on the replica too before the acknowledgement, where there is one
        (replication is asynchronous: a failover can drop what only the old primary
        had). With no replica up it cannot be, and is said, once a minute."""
        if not self.sentinel:
            return
        async with self._translated(doing):
            copies = int(await self.redis.wait(1, DURABLE_WAIT_MS))
        if copies < 1:
            _unreplicated(doing)

    @property
    def sentinel(self) -> bool:
        return isinstance(self.redis.connection_pool, SentinelConnectionPool)


DURABLE_WAIT_MS = 1000  # how long a write waits for a replica's copy
_warned = [0.0]


def _unreplicated(doing: str) -> None:
    if time.monotonic() - _warned[0] >= 60:
        _warned[0] = time.monotonic()
        log.warning("no Redis replica confirmed the write (%s) within %d ms: the primary "
                    "alone has it, and a failover now would lose it; start a replica",
                    doing, DURABLE_WAIT_MS)
