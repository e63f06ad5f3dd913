"""What an operator sees: readiness, Prometheus metrics after real traffic, and a
graceful stop that finishes the delivery in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.model import Address, Delivery, DeliveryState, ReplyContext
from bot.settings import KEYS, Settings
from storage.queue import RqScheduler
from storage.store import Store
from tests.bridge import SLACK_CHANNEL, SLACK_PEOPLE, bridge_env, prepare_chat, running_bridge
from tests.conftest import Services
from tests.mailhelp import eventually, make_mail, send_mail
from tests.servers import run_cli, start_switchboard
from tests.slackapi.client import SlackControl, SlackSender

pytestmark = pytest.mark.integration


async def test_readiness_and_metrics_after_a_bridged_email(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession) -> None:
    async with running_bridge(services, slack, http) as bridge:
        base = f"http://127.0.0.1:{bridge.settings.http_listen[1]}"
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{base}/readyz") as r:
            ready = await r.json()
        assert r.status == 200 and ready == {"ready": True, "checks": {
            "redis": True, f"mailbox {services.email('switchboard')}": True, "matrix": True}}
        await send_mail(services, make_mail("alice@partner.test", services.email("support"),
                                            "counted", "one"))
        await send_mail(services, make_mail("alice@partner.test", services.email("sales"),
                                            "counted too", "two"))

        async def both() -> bool:
            return len(await bridge.slack_posts()) == 1 and len(await bridge.room_posts()) == 1

        await eventually(both, what="both posts")
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
            assert r.headers["Content-Type"].startswith("text/plain")
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines()
                     if line and not line.startswith("#"))
        assert float(lines['switchboard_messages_bridged_total{direction="email_to_chat",'
                           'network="slack"}']) == 1.0
        assert float(lines['switchboard_messages_bridged_total{direction="email_to_chat",'
                           'network="matrix"}']) == 1.0
        assert float(lines["switchboard_ingest_lag_seconds_count"]) == 2.0
        assert 'switchboard_deliveries{state="delivered"}' in lines
        assert "switchboard_queue_depth" in lines


async def test_sigterm_during_a_delivery_finishes_it(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    room, _ = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room, SWITCHBOARD_LOG_FORMAT="json")
    settings = Settings.load(env)
    log = tmp_path / "run.log"
    process = start_switchboard("run", env, log)
    store = Store.open(settings.redis_url, prefix)
    try:
        base = f"http://127.0.0.1:{settings.http_listen[1]}"
        await eventually(lambda: _ready(http, base), within=60, what="switchboard run")
        await send_mail(services, make_mail(services.email("alice"), services.email("support"),
                                            "Shutdown", "Are you stopping?"))

        async def card() -> dict[str, Any] | None:
            posts = [m for m in await slack.messages(SLACK_CHANNEL) if not m["files"]]
            return posts[0] if posts else None

        post = await eventually(card, what="the card")
        sender = SlackSender(f"{base}/slack/events", env["SWITCHBOARD_SLACK_SIGNING_SECRET"],
                             slack, "T0SWITCH1")
        value = next(e["value"] for b in post["blocks"] if b["type"] == "actions"
                     for e in b["elements"] if e["action_id"] == "reply_in_chat")
        await sender.block_action(SLACK_PEOPLE["bob"], "bob", SLACK_CHANNEL, post,
                                  "reply_in_chat", value)
        view = await eventually(lambda: _view(slack), what="the modal")
        # Slack will make the DM wait 3 s: the delivery is in flight when SIGTERM comes.
        await slack.rate_limit("chat.postMessage", times=1, retry_after=3)
        status, _ = await sender.view_submission(SLACK_PEOPLE["bob"], "bob", view,
                                                 {"reply": {"text": "finish me"}})
        assert status == 200
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        assert code == 0, log.read_text()[-2000:]
        dms = [m for m in (await slack.state())["messages"]
               if m["channel"].startswith("D") and "finish me" in str(m["blocks"])]
        assert len(dms) == 1
        records = [json.loads(line) for line in log.read_text().splitlines()
                   if line.startswith("{")]
        assert any(r["message"].startswith("stopping") for r in records)
        assert records[-1]["message"] == "stopped"
        assert any(r.get("delivery") for r in records)  # lines carry the delivery id
        assert not any("finish me" in r["message"] or "Are you stopping" in r["message"]
                       for r in records)  # never a message body
    finally:
        if process.poll() is None:
            process.kill()
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


async def _ready(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _view(slack: SlackControl) -> dict[str, Any] | None:
    views = (await slack.state())["views"]
    return views[-1] if views else None


async def test_a_worker_reads_its_config_file_and_keeps_one_runtime(
        services: Services, slack: SlackControl, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """`switchboard --config FILE worker`: every job of the worker loads FILE (nothing
    in the environment), and the runtime is made once for all of them."""
    room, _ = await prepare_chat(services, slack, http)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    env = bridge_env(services, slack, prefix, room, SWITCHBOARD_LOG_FORMAT="json",
                     SWITCHBOARD_LOG_LEVEL="INFO")
    config = tmp_path / "switchboard.toml"
    by_env = {key.env: key.name for key in KEYS}
    config.write_text("".join(f"{by_env[k]} = {json.dumps(v)}\n" for k, v in env.items()))
    settings = Settings.load({}, config_file=config)
    store = Store.open(settings.redis_url, prefix)
    bob, alice = (Address.slack("T0SWITCH1", SLACK_PEOPLE[n]) for n in ("bob", "alice"))
    scheduler = RqScheduler(settings.redis_url, store.keys)
    ids = [f"dconfig{i}" for i in range(3)]
    try:
        for did in ids:
            await store.deliveries.create(Delivery(
                did, "cconfig", bob, alice, f"queued {did}", DeliveryState.PENDING,
                time.time(), context=ReplyContext(replier_name="Bob")))
            await store.deliveries.transition(did, DeliveryState.QUEUED, "alice away")
            await scheduler.schedule_retry(did, 1, 0)
        await asyncio.sleep(1.0)  # due now: the burst worker's scheduler enqueues them
        code, out, err = await run_cli("--config", str(config), "worker", "--burst",
                                       env=_without_settings())
        assert code == 0, err[-2000:]
        for did in ids:
            done = await store.deliveries.get(did)
            assert done is not None and done.state is DeliveryState.DELIVERED, err[-2000:]
        records = [json.loads(line) for line in (out + err).splitlines()
                   if line.startswith("{")]
        ready = [r for r in records if r["message"].startswith("worker runtime ready")]
        assert len(ready) == 1 and str(config) in ready[0]["message"]
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)
        await store.close()


def _without_settings() -> dict[str, str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
