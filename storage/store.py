"""The store as a whole: one Redis client shared by the address book, history and deliveries."""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import RedisTarget
from bot.stores import Stores
from storage.accounts import RedisCustomers
from storage.address_book import RedisAddressBook
from storage.appservice import RedisAppService
from storage.arrivals import RedisArrivals
from storage.audit import RedisAudit
from storage.beats import RedisBeats
from storage.blocks import RedisBlocks
from storage.connection import Redis, connect, target_of, translated, where_of
from storage.conversations import RedisConversations
from storage.deliveries import RedisDeliveries
from storage.erasure import RedisErasure
from storage.held import RedisHeld
from storage.history import RedisHistory
from storage.ingest import RedisIngest
from storage.keys import Keys
from storage.logins import RedisLogins
from storage.matrix_state import RedisMatrixState
from storage.pacing import RedisPacer
from storage.ratelimit import RedisRateLimits
from storage.routes import RedisRoutes
from storage.search import RedisSearch
from storage.tokens import RedisTokens
from storage.usage import RedisUsage
from storage.verification import RedisVerifications
from storage.workspaces import RedisWorkspaces


@dataclass(frozen=True)
class ServerInfo:
    version: str
    aof_enabled: bool
    used_memory: int


@dataclass
class Store:
    redis: Redis
    keys: Keys
    url: str
    address_book: RedisAddressBook
    history: RedisHistory
    deliveries: RedisDeliveries
    conversations: RedisConversations
    ingest: RedisIngest
    matrix: RedisMatrixState
    tokens: RedisTokens
    verifications: RedisVerifications
    rates: RedisRateLimits
    usage: RedisUsage
    customers: RedisCustomers
    audit: RedisAudit
    arrivals: RedisArrivals
    workspaces: RedisWorkspaces
    erasure: RedisErasure
    routes: RedisRoutes
    held: RedisHeld
    beats: RedisBeats
    logins: RedisLogins
    pacer: RedisPacer
    appservice: RedisAppService
    blocks: RedisBlocks
    search: RedisSearch
    target: RedisTarget | None = None  # where it is (None: at ``url``)

    @classmethod
    def open(cls, where: RedisTarget | str, prefix: str = "sb", ca_file: str | None = None
             ) -> Store:
        """The store at ``where``: a Redis URL, or a target (through Sentinel)."""
        target = target_of(where, ca_file)
        client = connect(target)
        keys = Keys(prefix)
        search = RedisSearch(client, keys)
        return cls(client, keys, target.url, RedisAddressBook(client, keys),
                   RedisHistory(client, keys, search),
                   RedisDeliveries(client, keys), RedisConversations(client, keys),
                   RedisIngest(client, keys), RedisMatrixState(client, keys),
                   RedisTokens(client, keys), RedisVerifications(client, keys),
                   RedisRateLimits(client, keys), RedisUsage(client, keys),
                   RedisCustomers(client, keys), RedisAudit(client, keys),
                   RedisArrivals(client, keys, search), RedisWorkspaces(client, keys),
                   RedisErasure(client, keys, search), RedisRoutes(client, keys),
                   RedisHeld(client, keys), RedisBeats(client, keys),
                   RedisLogins(client, keys), RedisPacer(client, keys),
                   RedisAppService(client, keys), RedisBlocks(client, keys), search, target)

    async def server_info(self) -> ServerInfo:
        """Version and persistence of the Redis server; raises StoreUnavailable."""
        async with translated(where_of(self.redis), "asking Redis for its version"):
            info = await self.redis.info()
        return ServerInfo(version=str(info.get("redis_version", "?")),
                          aof_enabled=bool(int(info.get("aof_enabled", 0))),
                          used_memory=int(info.get("used_memory", 0)))

    async def close(self) -> None:
        await self.redis.aclose()


def _conforms(store: Store) -> Stores:
    return store  # the type checker holds each store here to its protocol
