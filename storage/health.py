"""The store's contribution to `switchboard doctor`."""

from __future__ import annotations

from bot.doctor import Check
from bot.errors import StoreError
from bot.settings import Settings
from storage.connection import describe
from storage.sentinel import SentinelView, sentinel_view
from storage.store import Store

MIN_REDIS = (7, 0)


async def probe_redis(settings: Settings) -> list[Check]:
    target = settings.redis
    sentinel = await sentinel_view(target) if target.sentinels else None
    store = Store.open(target, settings.redis_prefix)
    where = describe(target)
    if sentinel is not None and sentinel.primary:
        where += f" (now {sentinel.primary})"
    try:
        info = await store.server_info()
        engine = await store.search.mode()
    except StoreError as exc:
        return [Check.fail("redis", str(exc).split(". Check")[0],
                           "start redis-server, or set SWITCHBOARD_REDIS_URL to a reachable one"),
                *(_sentinel_checks(sentinel) if sentinel is not None else [])]
    finally:
        await store.close()
    checks = [Check.ok("redis", f"Redis {info.version}: {where}", info.version)]
    major_minor = tuple(int(p) for p in info.version.split(".")[:2] if p.isdigit())
    if major_minor < MIN_REDIS:
        checks[0] = Check.fail("redis", f"Redis {info.version} ({where}) is too old",
                               "upgrade to Redis 7 or newer")
    if not info.aof_enabled:
        checks.append(Check.warn("redis", "append-only file (AOF) is off: a crash can lose "
                                 "the last changes to deliveries and history",
                                 "set 'appendonly yes' in redis.conf"))
    if engine:
        checks.append(Check.ok("search", "Redis's query engine (RediSearch) is loaded: "
                               "`search` works in chat" + (" (the 1.x module)"
                                                           if engine == "addhash" else "")))
    else:
        checks.append(Check.warn(
            "search", "the Redis has no query engine: `search` is off",
            "use Redis 8 or Redis Stack, or load RediSearch (Debian: apt-get install "
            "redis-redisearch, then `loadmodule /usr/lib/redis/modules/redisearch.so` in "
            "redis.conf of every node), then `switchboard search reindex`"))
    return checks + (_sentinel_checks(sentinel) if sentinel is not None else [])


def _sentinel_checks(view: SentinelView) -> list[Check]:
    """The sentinels' view: all of them reachable and agreeing on the primary, a replica
    online to fail over to, and the primary's rule on writes no replica takes."""
    if view.answering == 0:
        return [Check.fail("redis sentinel", f"none of the {view.sentinels} sentinels "
                           "answers", "start redis-sentinel, or correct "
                           "SWITCHBOARD_REDIS_SENTINELS")]
    if view.primary is None:
        return [Check.fail("redis sentinel", f"the sentinels know no primary named "
                           f"{view.master!r}", "set SWITCHBOARD_REDIS_SENTINEL_MASTER to the "
                           "name in their `sentinel monitor` line")]
    said = (f"primary {view.primary}, named by {view.agreeing} of {view.sentinels} "
            f"sentinel(s) ({view.answering} answering, quorum {view.quorum or '?'}); "
            f"replicas online: {', '.join(view.replicas) or 'none'}"
            + (f"; down: {', '.join(view.down)}" if view.down else ""))
    checks = [Check.ok("redis sentinel", said)]
    if view.agreeing < view.answering or view.answering < view.sentinels:
        checks[0] = Check.warn("redis sentinel", said, "every sentinel should answer and "
                               "name the same primary: check the ones that do not")
    if not view.replicas:
        checks.append(Check.warn("redis sentinel", "no replica is online: if the primary "
                                 "fails there is nothing to fail over to, and what it "
                                 "alone has is lost", "start a replica (`replicaof` the "
                                 "primary); Switchboard waits for a replica's copy before "
                                 "it acknowledges mail, when there is one"))
    if view.min_replicas_to_write == 0:
        checks.append(Check.warn("redis sentinel", "the primary accepts writes no replica "
                                 "has taken (min-replicas-to-write 0)", "with two replicas, "
                                 "set min-replicas-to-write 1 on every node, so a primary cut "
                                 "off from its replicas stops taking writes a failover "
                                 "would lose"))
    return checks
