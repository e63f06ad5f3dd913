"""Past one machine: the time from the Redis primary's death (SIGKILL, the sentinels then
fail over) to the first email posted afterwards, and the SMTP listener's throughput with
one `switchboard run` and with two sharing the store."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis.asyncio as aioredis

from bench import run
from bench.run import ROOT, RemoteSlack, Report, Row, sample
from tests.servers import free_port, wait_for_port

SERVICES = ROOT / "scripts" / "services.sh"


def _sentinel_env(env: dict[str, str]) -> dict[str, str]:
    return {"SWITCHBOARD_REDIS_SENTINELS": env["SB_SENTINELS"],
            "SWITCHBOARD_REDIS_SENTINEL_MASTER": env["SB_SENTINEL_MASTER"],
            "SWITCHBOARD_REDIS_URL": "redis://sentinel/0", "SWITCHBOARD_IMAP_HOST": "",
            "SWITCHBOARD_SENDER_RATE": "100000/60",
            "SWITCHBOARD_CONVERSATION_RATE": "100000/60"}


async def _services_up() -> None:
    await asyncio.to_thread(subprocess.run, ["bash", str(SERVICES), "up"], check=True,
                            capture_output=True)


async def _primary(env: dict[str, str]) -> int:
    host, _, port = env["SB_SENTINELS"].split(",")[0].rpartition(":")
    client = aioredis.Redis(host=host, port=int(port), decode_responses=True)
    try:
        found = await client.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "get-master-addr-by-name", env["SB_SENTINEL_MASTER"])
        return int(found[1])
    finally:
        await client.aclose()


async def failover_to_first_post(env: dict[str, str], slack: RemoteSlack,
                                 report: Report) -> None:
    """Emails at 20 a second through the listener; the primary SIGKILLed; how long
    until a post lands after it."""
    await _services_up()
    await slack.fresh()
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings, _ = run.settings_for(env, slack, prefix, SWITCHBOARD_SMTP_LISTEN=f"127.0.0.1:{port}",
                                   **_sentinel_env(env))
    killed_at = 0.0
    async with run.serving(settings, prefix):
        await asyncio.to_thread(wait_for_port, port)
        stop = False

        def keep_sending() -> None:
            i = 0
            while not stop:
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                        smtp.sendmail(f"sender{i}@partner.test", [to], sample(i, to))
                except (smtplib.SMTPException, OSError):
                    pass  # a 451 through the failover: the next one tries again
                i += 1
                time.sleep(0.05)

        sending = asyncio.get_running_loop().run_in_executor(None, keep_sending)
        await asyncio.sleep(3)
        old = await _primary(env)
        pid = int((Path(env["SB_SENTINEL_DIR"]) / f"node-{old}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        assert slack.control is not None

        async def posted_after() -> bool:
            assert slack.control is not None
            return any(m["received_at"] > killed_at + 0.05
                       for m in await slack.control.messages(run.CHANNEL))

        await run.wait_for(posted_after, 120, every=0.05)
        found = [m["received_at"] for m in await slack.control.messages(run.CHANNEL)
                 if m["received_at"] > killed_at + 0.05]
        stop = True
        await sending
    recovered = min(found) - killed_at if found else float("inf")
    await _services_up()  # the killed node back, as the new primary's replica
    report.add(Row("Redis primary SIGKILLed -> first email posted after (Sentinel failover)",
                   f"{recovered:.1f} s", "1 s (the sentinels' down-after)", "",
                   "< 15 s", "yes" if recovered < 15 else "no"),
               seconds=recovered)


def _burst(ports: list[int], to: str, count: int) -> float:
    """``count`` emails over the listeners at ``ports`` (8 sessions each), all at once."""
    def session(port: int, first: int, step: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            for i in range(first, count, step):
                smtp.sendmail(f"sender{i}@partner.test", [to], sample(i, to))

    sessions = [(p, k) for p in ports for k in range(8)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        list(pool.map(lambda s: session(s[1][0], s[0], len(sessions)), enumerate(sessions)))
    return time.perf_counter() - started


def _cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used (from /proc: Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def listener_throughput(env: dict[str, str], slack: RemoteSlack, report: Report,
                              count: int) -> None:
    """The listener's throughput with one `switchboard run`, then with two, each its own
    process (as on its own machine; this one only sends), on the plain Redis; with the
    CPU each part used per email, which says what bounds it."""
    to = f"support@{env['SB_MAIL_DOMAIN']}"
    rates, costs = [], []
    for processes in (1, 2):
        await slack.fresh()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        _, values = run.settings_for(
            env, slack, prefix, SWITCHBOARD_IMAP_HOST="", SWITCHBOARD_SENDER_RATE="100000/60",
            SWITCHBOARD_CONVERSATION_RATE="100000/60")
        children: list[subprocess.Popen[bytes]] = []
        ports = []
        store = aioredis.Redis(host="127.0.0.1", port=int(env["SB_REDIS_PORT"]))
        try:
            for _ in range(processes):
                port = free_port()
                child = {k: v for k, v in os.environ.items()
                         if not k.startswith("SWITCHBOARD_")}
                child.update(values, SWITCHBOARD_SMTP_LISTEN=f"127.0.0.1:{port}",
                             SWITCHBOARD_HTTP_LISTEN=f"127.0.0.1:{free_port()}")
                children.append(await asyncio.to_thread(
                    subprocess.Popen, [str(Path(sys.executable).parent / "switchboard"), "run"],
                    env=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                ports.append(port)
            for p in ports:
                await asyncio.to_thread(wait_for_port, p, 60)
            before = [_cpu_seconds(c.pid) for c in children]
            redis_before = await _redis_cpu(store)
            assert slack.process is not None
            slack_before, mine_before = _cpu_seconds(slack.process.pid), time.process_time()
            elapsed = await asyncio.to_thread(_burst, ports, to, count)
            used = [_cpu_seconds(c.pid) - b for c, b in zip(children, before, strict=True)]
            redis_used = await _redis_cpu(store) - redis_before
            harness = (_cpu_seconds(slack.process.pid) - slack_before
                       + time.process_time() - mine_before)
        finally:
            for child_process in children:
                child_process.terminate()
                child_process.wait(timeout=30)
            keys = [k async for k in store.scan_iter(match=f"{prefix}:*", count=5000)]
            for i in range(0, len(keys), 5000):
                await store.delete(*keys[i:i + 5000])
            await store.aclose()
        rates.append(count / elapsed)
        costs.append((sum(used) / count * 1000, redis_used / count * 1000,
                      sum(used) / elapsed, redis_used / elapsed, harness / elapsed))
        print(f"  {processes} process(es): {count / elapsed:.0f} msg/s; Switchboard "
              f"{costs[-1][0]:.1f} ms CPU per email ({costs[-1][2]:.2f} cores busy), Redis "
              f"{costs[-1][1]:.2f} ms ({costs[-1][3]:.2f} cores), the sender and the Slack "
              f"stand-in {costs[-1][4]:.2f} cores", flush=True)
    report.add(Row(f"SMTP listener throughput ({count:,} emails), 1 / 2 `run` processes",
                   f"{rates[0]:.0f} / {rates[1]:.0f} msg/s", "", f"{rates[1] / rates[0]:.2f}",
                   ">= 1.5x with two", "yes" if rates[1] >= 1.5 * rates[0] else "no"),
               one=rates[0], two=rates[1], cpu=costs)


async def _redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
