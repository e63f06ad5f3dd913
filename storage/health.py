"""The store's contribution to `switchboard doctor`."""

from __future__ import annotations

from bot.doctor import Check
from bot.errors import StoreError
from bot.settings import Settings
from storage.connection import redacted
from storage.store import Store

MIN_REDIS = (7, 0)


async def probe_redis(settings: Settings) -> list[Check]:
    store = Store.open(settings.redis_url, settings.redis_prefix, settings.tls_ca_file)
    where = redacted(settings.redis_url)
    try:
        info = await store.server_info()
    except StoreError as exc:
        return [Check.fail("redis", str(exc).split(". Check")[0],
                           "start redis-server, or set SWITCHBOARD_REDIS_URL to a reachable one")]
    finally:
        await store.close()
    checks = [Check.ok("redis", f"Redis {info.version} at {where}", info.version)]
    major_minor = tuple(int(p) for p in info.version.split(".")[:2] if p.isdigit())
    if major_minor < MIN_REDIS:
        checks[0] = Check.fail("redis", f"Redis {info.version} at {where} is too old",
                               "upgrade to Redis 7 or newer")
    if not info.aof_enabled:
        checks.append(Check.warn("redis", "append-only file (AOF) is off: a crash can lose "
                                 "the last changes to deliveries and history",
                                 "set 'appendonly yes' in redis.conf"))
    return checks
