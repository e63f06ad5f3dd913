"""Switchboard's benchmarks, against the real local services and beside the floor that the
protocols themselves set. Prints a table and writes bench/results/<date>.json.

    scripts/bench.sh                # everything
    scripts/bench.sh --quick        # smaller sizes (a minute or two)

Not part of the test command: figures on a shared machine are noisy, so each is shown
with the floor measured in the same run, and the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import imaplib
import json
import os
import platform
import pstats
import re
import smtplib
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aioimaplib
import aiosmtplib
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.model import (  # noqa: E402
    Address,
    Delivery,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Provenance,
    ReplyContext,
)
from bot.runtime.app import Runtime  # noqa: E402
from bot.settings import Settings  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.conftest import read_env_file  # noqa: E402
from tests.servers import free_port, wait_for_port  # noqa: E402
from tests.slackapi.client import SlackControl  # noqa: E402
from tests.slackapi.server import Workspace  # noqa: E402

CHANNEL = "C0BENCH001"
BOB = "U0BOBBENCH"
ALICE = "U0ALICEBEN"


@dataclass
class Row:
    what: str
    measured: str
    floor: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row, **data: Any) -> None:
        self.rows.append(row)
        self.data[row.what] = data
        print(f"  {row.what}: {row.measured}" + (f" (floor {row.floor})" if row.floor else ""),
              flush=True)

    def table(self) -> str:
        head = ("measure", "Switchboard", "floor", "ratio", "target", "met")
        rows = [head] + [(r.what, r.measured, r.floor, r.ratio, r.target, r.met)
                         for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
                 for r in rows]
        lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
        return "\n".join(lines)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- set-up ------------------------------------------------------------------------

def services_env() -> dict[str, str]:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "up"], check=True)
    path = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "env"], check=True,
                          capture_output=True, text=True).stdout.strip()
    return read_env_file(Path(path))


def bot_imap(env: dict[str, str]) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", int(env["SB_IMAP_PORT"]))
    client.login(env["SWITCHBOARD_IMAP_USER"], env["SB_TEST_PASSWORD"])
    return client


def clear_bot_mailbox(env: dict[str, str]) -> None:
    client = bot_imap(env)
    _, data = client.select("INBOX")
    if int(data[0] or 0):
        client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    client.logout()


def sample(i: int, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {i} <sender{i}@partner.test>"
    msg["To"] = to
    msg["Subject"] = f"bench {i:06d}"
    msg["Message-ID"] = make_msgid(domain="partner.test")
    msg.set_content(f"Hello,\n\nthis is benchmark message {i}.\n\nRegards,\nSender\n-- \nsig\n")
    return msg.as_bytes()


def append_messages(env: dict[str, str], count: int, to: str) -> None:
    """N messages straight into the Maildir, over IMAP APPEND (faster than SMTP)."""
    client = bot_imap(env)
    for i in range(count):
        client.append("INBOX", None, None, sample(i, to))
    client.logout()


class RemoteSlack:
    """The local Slack server in a process of its own, as Slack is in production: sharing
    the benchmark's event loop would charge its work to Switchboard (and to the floor)."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.http: Any = None
        self.control: SlackControl | None = None

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    async def start(self) -> None:
        import aiohttp

        port = free_port()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.slackapi", "--port", str(port), cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        assert b"local Slack Web API" in line, line
        self.base_url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()
        self.control = SlackControl(self.base_url, self.http)

    async def count(self) -> int:
        assert self.control is not None
        return await self.control.count(CHANNEL)

    async def fresh(self, limits: bool = False) -> None:
        """An empty workspace; Slack's documented limits off unless asked for (the
        capacity rows measure Switchboard, not Slack's pace)."""
        assert self.control is not None
        await self.control.reset()
        await self.control.limits(limits)
        await self.control.add_user(BOB, "bob", "bob@switchboard.test")
        await self.control.add_user(ALICE, "alice", "alice@switchboard.test")
        await self.control.add_channel(CHANNEL, "support", [BOB, ALICE])

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


def settings_for(env: dict[str, str], slack: RemoteSlack, prefix: str, **extra: str
                 ) -> tuple[Settings, dict[str, str]]:
    values = {k: v for k, v in env.items() if k.startswith("SWITCHBOARD_")}
    values.update({
        "SWITCHBOARD_REDIS_PREFIX": prefix, "SWITCHBOARD_SLACK_BOT_TOKEN": Workspace().bot_token,
        "SWITCHBOARD_SLACK_SIGNING_SECRET": "bench-secret",
        "SWITCHBOARD_SLACK_API_URL": slack.api_url,
        "SWITCHBOARD_ROUTES": f"support@{env['SB_MAIL_DOMAIN']}=slack:{CHANNEL}",
        "SWITCHBOARD_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        # Capacity rows: unpaced, against a Slack without its limits (fresh()).
        "SWITCHBOARD_SLACK_POST_INTERVAL": "0",
    })
    # Matrix stays off here: these figures are email <-> Slack, and the room is not needed.
    for key in ("SWITCHBOARD_MATRIX_HOMESERVER", "SWITCHBOARD_MATRIX_USER",
                "SWITCHBOARD_MATRIX_PASSWORD"):
        values.pop(key, None)
    values.update(extra)
    return Settings.load(values), values


@asynccontextmanager
async def serving(settings: Settings, prefix: str) -> AsyncIterator[Runtime]:
    """A running Switchboard (as `switchboard run`), stopped and its keys removed after."""
    runtime = await Runtime.start(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.serve(stop))
    try:
        yield runtime
    finally:
        stop.set()
        await task
        await cleanup(runtime.store, prefix)
        await runtime.close()


async def cleanup(store: Store, prefix: str) -> None:
    keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=5000)]
    for i in range(0, len(keys), 5000):
        await store.redis.delete(*keys[i:i + 5000])


async def wait_for(probe: Callable[[], Awaitable[bool]], limit: float,
                   every: float = 0.02) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(every)
    return await probe()


async def caught_up(runtime: Runtime) -> bool:
    return bool(runtime.ingests) and runtime.ingests[0].caught_up.is_set()


# --- email -> chat ------------------------------------------------------------------

def write_profile(profiler: cProfile.Profile, path: Path, elapsed: float, count: int) -> None:
    """Where one email's time goes: CPU by area of code (own time of the functions in
    it), beside the wall-clock per email, so what bounds the throughput shows."""
    stats = pstats.Stats(profiler)
    areas: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        areas[_area(filename)] = areas.get(_area(filename), 0.0) + own
    total = sum(areas.values())
    lines = [f"email -> Slack, {count} emails in {elapsed:.2f} s: "
             f"{elapsed / count * 1000:.2f} ms of wall-clock per email, "
             f"{total / count * 1000:.2f} ms of this process's CPU per email "
             "(the Slack server, Redis, Dovecot and the DNS server are other processes)",
             "", "CPU per email by area (own time of its functions):"]
    for area, spent in sorted(areas.items(), key=lambda a: -a[1]):
        lines.append(f"  {spent / count * 1000:7.3f} ms  {spent / total:5.1%}  {area}")
    lines += ["", "the functions with the most own time:"]
    path.write_text("\n".join(lines) + "\n")
    with path.open("a") as out:
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
    print("\n".join(lines[:3 + len(areas)]), flush=True)


_AREAS = (("/bot/", "Switchboard core (bot/)"), ("/bridges/", "Switchboard adapters (bridges/)"),
          ("/storage/", "Switchboard store (storage/)"), ("/bench/", "the benchmark itself"),
          ("redis/", "redis-py"), ("aioimaplib", "aioimaplib"), ("slack_sdk", "slack_sdk"),
          ("aiohttp", "aiohttp"), ("/email/", "stdlib email (parsing)"),
          ("dkim", "dkimpy"), ("spf", "pyspf"), ("/dns/", "dnspython"),
          ("jinja2", "jinja2"), ("nh3", "nh3"), ("asyncio", "asyncio"),
          ("json", "json"), ("/re/", "re"), ("ssl", "ssl"))


def _area(filename: str) -> str:
    if filename.startswith("<") or filename == "~":
        return "builtins and C code"
    return next((name for part, name in _AREAS if part in filename), "other Python")


async def floor_rate(env: dict[str, str], post: Callable[[str], Awaitable[None]]) -> float:
    """The floor: fetch every message of the bot's mailbox with the same IMAP library and
    post its raw text, with no parsing, storage or rendering. Messages per second."""
    client = aioimaplib.IMAP4("127.0.0.1", int(env["SB_IMAP_PORT"]), timeout=60)
    started = time.perf_counter()
    await client.wait_hello_from_server()
    await client.login(env["SWITCHBOARD_IMAP_USER"], env["SB_TEST_PASSWORD"])
    await client.select("INBOX")
    found = await client.uid_search("ALL")
    uids = [u for line in found.lines[:-1] for u in line.split() if u.isdigit()]
    for start in range(0, len(uids), 50):
        answer = await client.uid("fetch", b",".join(uids[start:start + 50]).decode(),
                                  "(UID BODY.PEEK[])")
        for line in answer.lines:
            if isinstance(line, bytearray):
                await post(bytes(line)[:3000].decode(errors="replace"))
    rate = len(uids) / (time.perf_counter() - started)
    await client.logout()
    return rate


async def email_to_chat_throughput(env: dict[str, str], slack: RemoteSlack, report: Report,
                                   count: int, profile: Path | None = None) -> None:
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    clear_bot_mailbox(env)
    append_messages(env, count, to)
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = settings_for(env, slack, prefix)
    profiler = cProfile.Profile() if profile else None
    async with serving(settings, prefix):
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()

        async def all_posted() -> bool:
            return await slack.count() >= count

        posted = await wait_for(all_posted, 600)
        elapsed = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
    rate = count / elapsed
    if profiler is not None and profile is not None:
        write_profile(profiler, profile, elapsed, count)
    assert posted, "not every message was posted"

    # The floor: the same messages, fetched with the same library and posted raw.
    await slack.fresh()
    web = AsyncWebClient(token=Workspace().bot_token, base_url=slack.api_url)

    async def post_raw(text: str) -> None:
        await web.chat_postMessage(channel=CHANNEL, text=text)

    floor = await floor_rate(env, post_raw)
    report.add(Row("email -> Slack throughput", f"{rate:.0f} msg/s", f"{floor:.0f} msg/s",
                   f"{rate / floor:.2f}", ">= 300 msg/s and >= 0.5 of floor",
                   "yes" if rate >= 300 and rate / floor >= 0.5 else "no"),
               messages=count, rate=rate, floor=floor, ratio=rate / floor)


async def email_to_matrix_throughput(env: dict[str, str], slack: RemoteSlack,
                                     report: Report, count: int) -> None:
    """The same, into a Synapse room (the bot is exempt from rate limits, as it must be)."""
    from nio import AsyncClient

    to = f"sales@{env['SB_MAIL_DOMAIN']}"
    bot = AsyncClient(env["SWITCHBOARD_MATRIX_HOMESERVER"], env["SWITCHBOARD_MATRIX_USER"])
    await bot.login(env["SWITCHBOARD_MATRIX_PASSWORD"], device_name="bench")
    room = (await bot.room_create(name="bench")).room_id  # type: ignore[union-attr]
    clear_bot_mailbox(env)
    append_messages(env, count, to)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = settings_for(env, slack, prefix, **{
        "SWITCHBOARD_ROUTES": f"{to}=matrix:{room}",
        "SWITCHBOARD_MATRIX_HOMESERVER": env["SWITCHBOARD_MATRIX_HOMESERVER"],
        "SWITCHBOARD_MATRIX_USER": env["SWITCHBOARD_MATRIX_USER"],
        "SWITCHBOARD_MATRIX_PASSWORD": env["SWITCHBOARD_MATRIX_PASSWORD"]})
    async with serving(settings, prefix) as runtime:
        started = time.perf_counter()
        posts = runtime.store.redis

        async def all_posted() -> bool:
            return int(await posts.hlen(runtime.store.keys.posts())) >= count

        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if await all_posted():
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    rate = count / elapsed

    async def send_raw(text: str) -> None:
        await bot.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})

    floor = await floor_rate(env, send_raw)
    await bot.close()
    report.add(Row("email -> Matrix throughput", f"{rate:.0f} msg/s", f"{floor:.0f} msg/s",
                   f"{rate / floor:.2f}", ">= 0.8 of floor", "yes" if rate / floor >= 0.8
                   else "no"),
               messages=count, rate=rate, floor=floor, ratio=rate / floor)


async def email_to_chat_latency(env: dict[str, str], slack: RemoteSlack, report: Report,
                                rate: float, seconds: float) -> None:
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    clear_bot_mailbox(env)
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = settings_for(env, slack, prefix)
    async with serving(settings, prefix) as runtime:
        await wait_for(lambda: caught_up(runtime), 30)
        count = int(rate * seconds)
        accepted = await send_at(int(env["SB_SMTP_PORT"]), to, rate, count)
        latencies = await post_latencies(slack, accepted)
    p50, p95, p99 = (pct(latencies, p) for p in (50, 95, 99))
    floor = await idle_floor(env, rate, count)
    f50, f99 = pct(floor, 50), pct(floor, 99)
    report.add(Row(f"SMTP accepted (by the MTA) -> Slack post over IMAP at {rate:.0f} msg/s",
                   f"p50 {p50:.0f} / p95 {p95:.0f} / p99 {p99:.0f} ms",
                   f"p50 {f50:.0f} / p99 {f99:.0f} ms seen by a bare IDLE client", "",
                   "p99 <= 500 ms", "yes" if p99 <= 500 else "no"),
               offered_rate=rate, messages=count, posted=len(latencies), p50_ms=p50,
               p95_ms=p95, p99_ms=p99, floor_p50_ms=f50, floor_p99_ms=f99)


async def send_at(port: int, to: str, rate: float, count: int, *, submitted: bool = False
                  ) -> dict[str, float]:
    """``count`` emails over one SMTP session at ``rate`` a second; subject -> when the
    server accepted it (``submitted``: when the client began sending it: Switchboard's
    own listener answers only once the email is posted)."""
    accepted: dict[str, float] = {}

    def send_all() -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            began = time.monotonic()
            for i in range(count):
                pause = began + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                start = time.time()
                smtp.sendmail(f"sender{i}@partner.test", [to], sample(i, to))
                accepted[f"bench {i:06d}"] = start if submitted else time.time()

    await asyncio.to_thread(send_all)
    return accepted


async def idle_floor(env: dict[str, str], rate: float, count: int) -> list[float]:
    """The floor of the IMAP path: from the MTA's acceptance to a bare IDLE client's
    seeing the message (fetching its subject), with no parsing, storage or posting."""
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    clear_bot_mailbox(env)
    client = aioimaplib.IMAP4("127.0.0.1", int(env["SB_IMAP_PORT"]), timeout=60)
    await client.wait_hello_from_server()
    await client.login(env["SWITCHBOARD_IMAP_USER"], env["SB_TEST_PASSWORD"])
    await client.select("INBOX")
    seen: dict[str, float] = {}
    last = 0
    stopping = asyncio.Event()

    async def watch() -> None:
        nonlocal last
        while not stopping.is_set():
            idle = await client.idle_start(timeout=60)
            while not stopping.is_set():
                try:
                    pushed = await client.wait_server_push(timeout=0.5)
                except TimeoutError:
                    continue
                if any(b"EXISTS" in line for line in pushed if isinstance(line, bytes)):
                    break
            client.idle_done()
            await asyncio.wait_for(idle, 10)
            found = await client.uid("fetch", f"{last + 1}:*",
                                     "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            now = time.time()
            for line in found.lines:
                if isinstance(line, bytearray) and (m := re.search(rb"bench \d+", line)):
                    seen.setdefault(m.group(0).decode(), now)
                elif isinstance(line, bytes) and (m := re.search(rb"UID (\d+)", line)):
                    last = max(last, int(m.group(1)))

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    accepted = await send_at(int(env["SB_SMTP_PORT"]), to, rate, count)
    await wait_for(lambda: _all_seen(seen, accepted), 60, every=0.1)
    stopping.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(watching, 10)
    with contextlib.suppress(Exception):  # a session cut off mid-IDLE: just drop it
        await asyncio.wait_for(client.logout(), 5)
    return [(seen[k] - t) * 1000 for k, t in accepted.items() if k in seen]


async def _all_seen(seen: dict[str, float], accepted: dict[str, float]) -> bool:
    return all(k in seen for k in accepted)


async def post_latencies(slack: RemoteSlack, accepted: dict[str, float]) -> list[float]:
    """Once every accepted email is posted: each one's time from accepted to posted."""
    async def all_posted() -> bool:
        return await slack.count() >= len(accepted)

    await wait_for(all_posted, 120, every=0.2)
    assert slack.control is not None
    latencies = []
    for m in await slack.control.messages(CHANNEL):
        if not m["blocks"]:
            continue
        subject = m["blocks"][0]["text"]["text"].split("*Subject:* ")[1].split("\n")[0]
        if subject in accepted:
            latencies.append((m["received_at"] - accepted[subject]) * 1000)
    return latencies


async def listener_latency(env: dict[str, str], slack: RemoteSlack, report: Report,
                           rate: float, seconds: float) -> None:
    """The same through Switchboard's own SMTP listener (no MTA, no mailbox between)."""
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings, _ = settings_for(env, slack, prefix, SWITCHBOARD_SMTP_LISTEN=f"127.0.0.1:{port}",
                               SWITCHBOARD_IMAP_HOST="")
    async with serving(settings, prefix):
        await asyncio.to_thread(wait_for_port, port)
        count = int(rate * seconds)
        accepted = await send_at(port, to, rate, count, submitted=True)
        latencies = await post_latencies(slack, accepted)
    p50, p95, p99 = (pct(latencies, p) for p in (50, 95, 99))
    report.add(Row(f"SMTP submitted to Switchboard's listener -> Slack post at {rate:.0f} msg/s",
                   f"p50 {p50:.0f} / p95 {p95:.0f} / p99 {p99:.0f} ms", "", "",
                   "p99 <= 100 ms", "yes" if p99 <= 100 else "no"),
               offered_rate=rate, messages=count, posted=len(latencies), p50_ms=p50,
               p95_ms=p95, p99_ms=p99)


# --- chat -> email ------------------------------------------------------------------

async def chat_to_email(env: dict[str, str], slack: RemoteSlack, report: Report,
                        rate: float, count: int) -> None:
    import aiohttp

    from tests.slackapi.client import SlackControl, SlackSender

    # An empty bot mailbox: otherwise the runtime's IMAP ingest re-reads what the steps
    # before left there, on the same event loop, and the ack measures that too.
    clear_bot_mailbox(env)
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = settings_for(env, slack, prefix)
    async with serving(settings, prefix) as runtime:
        store = runtime.store
        dave = Address.email("dave@switchboard.test")
        entry = HistoryEntry("e1", "cbench", EntryKind.EMAIL, dave,
                             (Address.email(f"support@{env['SB_MAIL_DOMAIN']}"),), time.time(),
                             "Can you send the numbers?", subject="Numbers",
                             meta={"message_id": "<bench-1@partner.test>"})
        await store.history.append(entry)
        port = settings.http_listen[1]
        acks: list[float] = []
        sent_at: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            control = SlackControl(slack.base_url, http)
            sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", "bench-secret", control,
                                 Workspace().team_id)
            view = {"id": "", "type": "modal", "callback_id": "reply_by_email_modal",
                    "private_metadata": json.dumps({"c": "cbench", "e": "e1",
                                                    "w": [CHANNEL, "1.1", "1.1"]})}

            async def one(i: int) -> None:
                v = {**view, "id": f"VBENCH{i:06d}"}
                began = time.perf_counter()
                sent_at[v["id"]] = time.time()
                status, _ = await sender.view_submission(BOB, "bob", v,
                                                         {"reply": {"text": f"answer {i}"}})
                acks.append((time.perf_counter() - began) * 1000)
                assert status == 200

            tasks = []
            began = time.monotonic()
            for i in range(count):
                pause = began + i / rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

        async def emailed() -> list[Delivery]:
            return await store.deliveries.in_state(DeliveryState.EMAILED, count + 10)

        deadline = time.monotonic() + 120
        done: list[Delivery] = []
        while time.monotonic() < deadline:
            done = await emailed()
            if len(done) >= count:
                break
            await asyncio.sleep(0.1)
        to_smtp = []
        from bot.ids import delivery_id_for
        by_id = {delivery_id_for(f"slack-view:{vid}"): t for vid, t in sent_at.items()}
        for d in done:
            change = next(c for c in d.changes if c.state is DeliveryState.EMAILED)
            if d.id in by_id:
                to_smtp.append((change.at - by_id[d.id]) * 1000)

    # The floor: a bare aiosmtplib send loop.
    cfg = settings.smtp
    assert cfg is not None
    msgs = []
    for i in range(count):
        m = EmailMessage()
        m["From"] = f"switchboard@{env['SB_MAIL_DOMAIN']}"
        m["To"] = "dave@switchboard.test"
        m["Subject"] = f"floor {i}"
        m.set_content("answer")
        msgs.append(m)
    began = time.perf_counter()
    for m in msgs:
        await aiosmtplib.send(m, hostname=cfg.host, port=cfg.port, start_tls=None,
                              tls_context=ssl.create_default_context(
                                  cafile=settings.tls_ca_file))
    floor_ms = (time.perf_counter() - began) / count * 1000
    p99_ack = pct(acks, 99)
    report.add(Row(f"Slack reply-by-email ack at {rate:.0f} req/s",
                   f"p50 {pct(acks, 50):.0f} / p99 {p99_ack:.0f} ms", "", "",
                   "p99 <= 100 ms", "yes" if p99_ack <= 100 else "no"),
               requests=count, p50_ms=pct(acks, 50), p99_ms=p99_ack)
    report.add(Row("request -> SMTP accepted",
                   f"p50 {pct(to_smtp, 50):.0f} / p99 {pct(to_smtp, 99):.0f} ms",
                   f"{floor_ms:.0f} ms per bare send", "", "", ""),
               emails=len(to_smtp), p50_ms=pct(to_smtp, 50), p99_ms=pct(to_smtp, 99),
               floor_ms=floor_ms)


# --- reply in chat with history -----------------------------------------------------

async def reply_with_history(env: dict[str, str], slack: RemoteSlack, report: Report,
                             sizes: list[int]) -> None:
    await slack.fresh()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings, _ = settings_for(env, slack, prefix)
    runtime = await Runtime.start(settings)
    store = runtime.store
    alice = Address.email("alice@switchboard.test")
    await store.address_book.link(alice, provenance=Provenance.IMPORTED, verified=True)
    await store.address_book.link(Address.slack(Workspace().team_id, ALICE),
                                  provenance=Provenance.IMPORTED, verified=True, to=alice)
    bob = Address.slack(Workspace().team_id, BOB)
    timings = {}
    for size in sizes:
        cid = f"chist{size}"
        pipe_batch = []
        for i in range(size):
            pipe_batch.append(HistoryEntry(f"h{i}", cid, EntryKind.EMAIL, alice, (bob,),
                                           1_700_000_000 + i, f"earlier message {i}",
                                           subject="Long thread"))
            if len(pipe_batch) == 50:
                await asyncio.gather(*(store.history.append(e) for e in pipe_batch))
                pipe_batch = []
        await asyncio.gather(*(store.history.append(e) for e in pipe_batch))
        samples = []
        for r in range(15):
            began = time.perf_counter()
            outcome = await runtime.replies.start(
                replier=bob, replier_name="bob", conversation_id=cid, entry_id=f"h{size - 1}",
                text=f"reply {r}", request=f"bench-{size}-{r}-{uuid.uuid4().hex}")
            samples.append((time.perf_counter() - began) * 1000)
            assert type(outcome).__name__ == "Delivered", outcome
        timings[size] = statistics.median(samples)
    await cleanup(store, prefix)
    await runtime.close()
    smallest, largest = timings[sizes[0]], timings[sizes[-1]]
    report.add(Row("reply in chat, history " + " / ".join(f"{s:,}" for s in sizes),
                   " / ".join(f"{timings[s]:.1f}" for s in sizes) + " ms", "", "",
                   "flat in history length", "yes" if largest <= smallest * 2 else "no"),
               median_ms=timings)


# --- the store ----------------------------------------------------------------------

async def store_figures(env: dict[str, str], report: Report, sizes: list[int]) -> None:
    url = env["SWITCHBOARD_REDIS_URL"]
    for size in sizes:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        store = Store.open(url, prefix)
        before = (await store.server_info()).used_memory
        batch = 50
        began = time.perf_counter()
        for start in range(0, size, batch):
            await asyncio.gather(*(store.address_book.link(
                Address.email(f"user{i}@example.com"), provenance=Provenance.IMPORTED,
                verified=True) for i in range(start, min(size, start + batch))))
        link_rate = size / (time.perf_counter() - began)
        per_mapping = ((await store.server_info()).used_memory - before) / size
        lookups = 20000
        began = time.perf_counter()
        for start in range(0, lookups, batch):
            await asyncio.gather(*(store.address_book.resolve(
                Address.email(f"user{(i * 7919) % size}@example.com"))
                for i in range(start, start + batch)))
        lookup_rate = lookups / (time.perf_counter() - began)
        before = (await store.server_info()).used_memory
        entries = min(size, 100_000)
        began = time.perf_counter()
        alice, bob = Address.email("alice@example.com"), Address.email("bob@example.com")
        for start in range(0, entries, batch):
            await asyncio.gather(*(store.history.append(HistoryEntry(
                f"e{i}", f"c{i % 1000}", EntryKind.EMAIL, alice, (bob,), 1_700_000_000 + i,
                "a short message of the usual kind", subject="Subject line"))
                for i in range(start, min(entries, start + batch))))
        append_rate = entries / (time.perf_counter() - began)
        per_entry = ((await store.server_info()).used_memory - before) / entries
        await cleanup(store, prefix)
        await store.close()
        report.add(Row(f"store at {size:,} mappings",
                       f"{lookup_rate:,.0f} look-ups/s, {append_rate:,.0f} appends/s, "
                       f"{per_mapping:.0f} B/mapping, {per_entry:.0f} B/entry", "", "",
                       "<= 1 KB/mapping", "yes" if per_mapping <= 1024 else "no"),
                   mappings=size, link_rate=link_rate, lookup_rate=lookup_rate,
                   append_rate=append_rate, bytes_per_mapping=per_mapping,
                   bytes_per_entry=per_entry)


# --- the worker path -----------------------------------------------------------------

async def worker_path(env: dict[str, str], slack: RemoteSlack, report: Report,
                      jobs: int, pools: list[int]) -> None:
    from rq import Queue

    from storage.queue import RETRY_JOB, RqScheduler

    results = {}
    for workers in pools:
        await slack.fresh()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        settings, values = settings_for(env, slack, prefix)
        store = Store.open(settings.redis_url, prefix)
        scheduler = RqScheduler(settings.redis_url, store.keys)
        alice = Address.slack(Workspace().team_id, ALICE)
        bob = Address.slack(Workspace().team_id, BOB)
        for i in range(jobs):
            did = f"dbench{i}"
            await store.deliveries.create(Delivery(
                did, "cbench", bob, alice, f"queued {i}", DeliveryState.PENDING, time.time(),
                context=ReplyContext(email=Address.email("alice@switchboard.test"))))
            await store.deliveries.transition(did, DeliveryState.QUEUED, "bench")
        # Due now, on the queue itself: every burst worker finds the whole backlog (had
        # they to wait for one worker's scheduler to move them, the others would find
        # the queue empty and leave).
        scheduler.queue.enqueue_many([Queue.prepare_data(
            RETRY_JOB, (f"dbench{i}",), job_id=f"retry-dbench{i}-1", result_ttl=3600)
            for i in range(jobs)])
        began = time.perf_counter()
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.runtime.cli", "worker", "--burst",
            env={**{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
                 **values}, cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            for _ in range(workers)]
        deadline = time.monotonic() + 600
        done: list[Delivery] = []
        while time.monotonic() < deadline:
            done = await store.deliveries.in_state(DeliveryState.DELIVERED, jobs + 1)
            if len(done) >= jobs:
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - began
        for p in procs:
            if p.returncode is None:
                p.terminate()
            await p.wait()
        # Steady state: from the first delivery to the last (the workers' start-up, a
        # second or two, is shown apart).
        times = sorted(c.at for d in done for c in d.changes
                       if c.state is DeliveryState.DELIVERED)
        steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        results[workers] = {"steady": steady, "with_startup": len(done) / elapsed}
        await cleanup(store, prefix)
        await store.close()
    one = results[pools[0]]["steady"]
    report.add(Row("queued retries per second, " + " / ".join(f"{w} worker(s)" for w in pools),
                   " / ".join(f"{results[w]['steady']:.0f}" for w in pools)
                   + " (with start-up: " + " / ".join(f"{results[w]['with_startup']:.0f}"
                                                      for w in pools) + ")",
                   "", "", ">= 50/s with one worker, growing with workers",
                   "yes" if one >= 50 and max(results[w]["steady"] for w in pools[1:])
                   >= 1.3 * one else "no"),
               jobs=jobs, per_second=results)


# --- main ---------------------------------------------------------------------------

def _limit_steps(env: dict[str, str], slack: RemoteSlack, report: Report, quick: bool
                 ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """Bursts under the chat servers' own limits (bench/limits.py)."""
    from bench import limits

    matrix, slack_count = (40, 30) if quick else (100, 60)
    return [
        ("Matrix burst, application service", lambda: limits.matrix_burst(
            env, slack, report, matrix, appservice=True)),
        ("Matrix burst, bot account", lambda: limits.matrix_burst(
            env, slack, report, 20 if quick else 40, appservice=False)),
        ("Slack burst, one channel", lambda: limits.slack_burst(
            env, slack, report, slack_count, 1)),
        ("Slack burst, six channels", lambda: limits.slack_burst(
            env, slack, report, slack_count, 6)),
    ]


def _many_steps(env: dict[str, str], slack: RemoteSlack, report: Report, quick: bool
                ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """Past one machine (bench/many.py): a Sentinel failover, two `run` processes."""
    from bench import many

    return [
        ("Sentinel failover to first post", lambda: many.failover_to_first_post(
            env, slack, report)),
        ("listener throughput, one and two processes", lambda: many.listener_throughput(
            env, slack, report, 300 if quick else 1000)),
    ]


def _search_steps(env: dict[str, str], slack: RemoteSlack, report: Report, quick: bool
                  ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """Search (bench/search.py): latency at a large history, indexing's CPU."""
    from bench import search

    return search.main_steps(env, slack, report, quick)


async def main(quick: bool, profile: Path | None = None, only: str = "") -> Report:
    env = services_env()
    report = Report()
    report.data["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    slack = RemoteSlack()
    await slack.start()
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("email -> chat throughput", lambda: email_to_chat_throughput(
            env, slack, report, 200 if quick else 1000, profile)),
        ("email -> Matrix throughput", lambda: email_to_matrix_throughput(
            env, slack, report, 100 if quick else 300)),
        ("email -> chat latency", lambda: email_to_chat_latency(
            env, slack, report, 50, 4 if quick else 10)),
        ("SMTP listener latency", lambda: listener_latency(
            env, slack, report, 50, 4 if quick else 10)),
        ("chat -> email", lambda: chat_to_email(env, slack, report, 50, 100 if quick else 300)),
        ("reply in chat with history", lambda: reply_with_history(
            env, slack, report, [10, 1000, 10_000] if quick else [10, 1000, 100_000])),
        ("store", lambda: store_figures(env, report,
                                        [10_000, 100_000] if quick else [10_000, 1_000_000])),
        ("worker path", lambda: worker_path(env, slack, report, 200 if quick else 1000,
                                            [1, 2, 4])),
        *_limit_steps(env, slack, report, quick),
        *_many_steps(env, slack, report, quick),
        *_search_steps(env, slack, report, quick),
    ]
    if only:
        steps = [s for s in steps if only.lower() in s[0].lower()]
    for name, step in steps[:1] if profile else steps:
        print(f"{name} …", flush=True)
        await step()
    await slack.stop()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="profile the email -> Slack step into FILE, and stop after it")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="run only the steps whose name contains TEXT (like 'burst')")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick, args.profile, args.only))
    print()
    print(result.table())
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps({"rows": [r.__dict__ for r in result.rows], **result.data},
                               indent=2, default=str))
    print(f"\nwritten to {path.relative_to(ROOT)}")
