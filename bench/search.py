"""Search: the latency of a search at a large history (p50/p95 of people's searches, each
limited to what its asker may read, and an administrator's), and what indexing adds to
the CPU of an ingested email (Switchboard's process and Redis's, with and without)."""

from __future__ import annotations

import random
import resource
import time
import uuid
from collections.abc import Awaitable, Callable

from bench import run
from bench.run import RemoteSlack, Report, Row, pct
from bot.model import Address, EntryKind, HistoryEntry
from bot.search import SearchQuery, room_token, viewer_token
from storage.codec import dump_entry
from storage.history import APPEND_ENTRY, entry_keys
from storage.search import RedisSearch
from storage.store import Store

WORDS = ("refund", "invoice", "order", "delivery", "payment", "account", "password",
         "contract", "meeting", "offsite", "budget", "shipment", "warranty", "discount",
         "renewal", "cancel", "upgrade", "report", "schedule", "ticket", "quote", "price",
         "tax", "receipt", "address", "phone", "support", "question", "answer", "thanks",
         "issue", "error", "login", "access", "license", "seats", "training", "travel",
         "hotel", "flight", "visa", "holiday")
FILLER = ("the", "a", "we", "you", "they", "will", "can", "please", "see", "our", "your",
          "this", "that", "with", "for", "from", "about", "when", "then", "next", "week",
          "today", "tomorrow", "friday", "monday", "soon")
PEOPLE = 5000
ROOMS = 50
PER_CONVERSATION = 20


def _entry(rng: random.Random, cid: str, i: int, people: list[Address], at: float
           ) -> HistoryEntry:
    text = " ".join(rng.choice(FILLER if rng.random() < 0.6 else WORDS) for _ in range(40))
    sender = people[i % len(people)]
    return HistoryEntry(f"e{i}", cid, EntryKind.EMAIL if i % 2 == 0 else EntryKind.CHAT,
                        sender, tuple(p for p in people if p != sender), at + i, text,
                        subject=" ".join(rng.sample(WORDS, 3)),
                        meta={"posted": f"slack:C{cid[-6:]}:{at + i:.6f}"})


async def load(store: Store, count: int, rng: random.Random) -> list[list[Address]]:
    """``count`` entries in conversations of three people, each posted in one of ROOMS
    rooms; returns who is in each conversation."""
    persons = [Address.email(f"person{i}@partner.test") for i in range(PEOPLE)]
    search = store.search
    mode = await search.mode()
    assert mode, "the benchmark needs Redis's query engine (scripts/services.sh loads it)"
    groups = []
    k = store.keys
    start = time.time() - 365 * 86400
    for c in range(count // PER_CONVERSATION):
        cid = f"bc{c:07d}"
        people = rng.sample(persons, 3)
        groups.append(people)
        room = f"slack:room:C{rng.randrange(ROOMS):05d}"
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hset(k.conversation_threads(cid), room, "x")
            for i in range(PER_CONVERSATION):
                entry = _entry(rng, cid, i, people, start + c * 30)
                keys = entry_keys(k, entry)
                pipe.eval(APPEND_ENTRY, len(keys), *keys, entry.id, dump_entry(entry),
                          repr(entry.at), f"{cid}/{entry.id}", repr(entry.at))
                search.index(pipe, entry, mode)
            await pipe.execute()
    return groups


async def search_latency(env: dict[str, str], slack: RemoteSlack, report: Report,
                         count: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = run.settings_for(env, slack, prefix)
    store = Store.open(settings.redis, prefix)
    rng = random.Random(7)
    try:
        loaded = time.perf_counter()
        groups = await load(store, count, rng)
        loaded = time.perf_counter() - loaded
        person_times, admin_times = [], []
        for i in range(200):
            people = groups[rng.randrange(len(groups))]
            words = tuple(rng.sample(WORDS, 1 if i % 2 else 2))
            viewers = [viewer_token(people[0]),
                       *(room_token(f"slack:room:C{rng.randrange(ROOMS):05d}") for _ in range(3))]
            began = time.perf_counter()
            await store.search.search(SearchQuery(words=words), viewers, 0, 5)
            person_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            await store.search.search(SearchQuery(words=words), None, 0, 5)
            admin_times.append(time.perf_counter() - began)
        p95 = pct(person_times, 95) * 1000
        report.add(Row(f"search at {count:,} history entries (a person's: own + 3 rooms)",
                       f"p50 {pct(person_times, 50) * 1000:.1f} / p95 {p95:.1f} ms", "", "",
                       "p95 < 100 ms", "yes" if p95 < 100 else "no"),
                   entries=count, load_seconds=loaded, person=person_times, admin=admin_times)
        report.add(Row(f"search at {count:,} history entries (an administrator's: all)",
                       f"p50 {pct(admin_times, 50) * 1000:.1f} / p95 "
                       f"{pct(admin_times, 95) * 1000:.1f} ms"))
        print(f"  (loaded {count:,} entries and their documents in {loaded:.0f} s)")
    finally:
        if await store.search.mode() == "addhash":  # the 1.x index is not keys to clean up
            await store.redis.execute_command(  # type: ignore[no-untyped-call]
                "FT.DROP", store.keys.search_index(), "KEEPDOCS")
        await run.cleanup(store, prefix)
        await store.close()


async def _redis_cpu(store: Store) -> float:
    info = await store.redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _ingest_cpu(env: dict[str, str], slack: RemoteSlack, count: int, indexed: bool
                      ) -> tuple[float, float]:
    """CPU seconds per email of this process and of Redis, over the IMAP ingest."""
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    run.clear_bot_mailbox(env)
    run.append_messages(env, count, to)
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = run.settings_for(env, slack, prefix)
    real = RedisSearch.mode

    async def off(self: RedisSearch) -> str:
        return ""

    if not indexed:
        RedisSearch.mode = off  # type: ignore[method-assign]
    try:
        async with run.serving(settings, prefix) as runtime:
            redis_before = await _redis_cpu(runtime.store)
            mine = resource.getrusage(resource.RUSAGE_SELF)
            await run.wait_for(lambda: _posted(slack, count), 600)
            after = resource.getrusage(resource.RUSAGE_SELF)
            redis_after = await _redis_cpu(runtime.store)
    finally:
        RedisSearch.mode = real  # type: ignore[method-assign]
    own = (after.ru_utime + after.ru_stime - mine.ru_utime - mine.ru_stime) / count
    return own, (redis_after - redis_before) / count


async def _posted(slack: RemoteSlack, count: int) -> bool:
    return await slack.count() >= count


async def indexing_cost(env: dict[str, str], slack: RemoteSlack, report: Report,
                        count: int) -> None:
    # Alternated, twice each: the first run of a process warms what the later ones use.
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for indexed_now in (False, True, True, False):
        runs[indexed_now].append(await _ingest_cpu(env, slack, count, indexed=indexed_now))
    plain = tuple(sum(r[i] for r in runs[False]) / 2 for i in (0, 1))
    indexed = tuple(sum(r[i] for r in runs[True]) / 2 for i in (0, 1))
    before, after = sum(plain), sum(indexed)
    added = (after - before) / before
    report.add(Row("CPU of an ingested email (Switchboard + Redis), without / with the "
                   "search index", f"{before * 1000:.2f} / {after * 1000:.2f} ms "
                   f"({added:+.0%})", "", "", "<= +10%", "yes" if added <= 0.10 else "no"),
               plain=plain, indexed=indexed, runs={"plain": runs[False], "indexed": runs[True]})


def main_steps(env: dict[str, str], slack: RemoteSlack, report: Report, quick: bool
               ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    return [
        ("search latency", lambda: search_latency(env, slack, report,
                                                  100_000 if quick else 1_000_000)),
        ("search indexing cost", lambda: indexing_cost(env, slack, report,
                                                       300 if quick else 1000)),
    ]


