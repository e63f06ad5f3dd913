"""What the sentinels say about Switchboard's Redis: which node is the primary (and how
many of them agree), its replicas, and whether the primary refuses writes no replica
takes; for `switchboard doctor`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from bot.settings import RedisTarget
from storage.connection import connection_options, sentinel_options


@dataclass(frozen=True)
class SentinelView:
    master: str
    sentinels: int  # configured
    answering: int  # of them, reachable
    primary: str | None  # host:port the most of them name
    agreeing: int  # sentinels naming it
    quorum: int | None
    replicas: list[str] = field(default_factory=list)  # host:port of those online
    down: list[str] = field(default_factory=list)  # replicas the sentinels see down
    min_replicas_to_write: int | None = None  # the primary's setting (None: unread)


async def _ask(host: str, port: int, target: RedisTarget) -> dict[str, Any] | None:
    client = aioredis.Redis(host=host, port=port, decode_responses=True,
                            **sentinel_options(target))
    # Raw replies (redis-py's parsed ones differ by version); execute_command is untyped.
    ask: Any = client.execute_command
    try:
        named = await ask("SENTINEL", "get-master-addr-by-name", target.master)
        master = await ask("SENTINEL", "MASTER", target.master)
        replicas = await ask("SENTINEL", "REPLICAS", target.master)
    except (redis_errors.RedisError, OSError):
        return None
    finally:
        await client.aclose()
    return {"primary": f"{named[0]}:{named[1]}" if named else None,
            "master": _pairs(master), "replicas": [_pairs(r) for r in replicas or []]}


def _pairs(reply: Any) -> dict[str, str]:
    """SENTINEL replies come as a flat list of names and values (or, with RESP3, a map)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply or [])
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


async def sentinel_view(target: RedisTarget) -> SentinelView:
    answers = await asyncio.gather(*(_ask(h, p, target) for h, p in target.sentinels))
    heard = [a for a in answers if a is not None]
    named: dict[str, int] = {}
    for answer in heard:
        if answer["primary"]:
            named[answer["primary"]] = named.get(answer["primary"], 0) + 1
    primary = max(named, key=lambda k: named[k]) if named else None
    view = next((a for a in heard if a["primary"] == primary), None)
    replicas: list[str] = []
    down: list[str] = []
    quorum = None
    if view is not None:
        quorum = int(view["master"].get("quorum", 0)) or None
        for replica in view["replicas"]:
            where = f"{replica.get('ip')}:{replica.get('port')}"
            flags = replica.get("flags", "")
            (down if "down" in flags or "disconnected" in flags else replicas).append(where)
    return SentinelView(target.master, len(target.sentinels), len(heard), primary,
                        named.get(primary, 0) if primary else 0, quorum, replicas, down,
                        await _min_replicas(primary, target))


async def _min_replicas(primary: str | None, target: RedisTarget) -> int | None:
    if primary is None:
        return None
    host, _, port = primary.rpartition(":")
    options = connection_options(target, decode=True)
    options["socket_timeout"] = 5
    client = aioredis.Redis(host=host, port=int(port), **options)
    try:
        with contextlib.suppress(redis_errors.RedisError, OSError):
            found = await client.config_get("min-replicas-to-write")
            return int(str(found.get("min-replicas-to-write", 0)))
        return None
    finally:
        await client.aclose()
