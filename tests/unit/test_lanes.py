"""Side by side except within a conversation: the lanes, the keys read from an email's
headers, and the checkpoint that never passes an email still in hand."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest

from bot.lanes import LaneBlocked, Lanes
from bridges.email.imap import _Progress
from bridges.email.order import conversation_keys


def _mail(message_id: str, *, in_reply_to: str = "", references: str = "",
          to: str = "support@example.com", subject: str = "Hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content("hi")
    return msg.as_bytes()


def test_a_reply_shares_a_key_with_what_it_answers() -> None:
    first = conversation_keys(_mail("<a@x>"))
    reply = conversation_keys(_mail("<b@x>", in_reply_to="<a@x>", references="<a@x>"))
    third = conversation_keys(_mail("<c@x>", in_reply_to="<b@x>"))
    other = conversation_keys(_mail("<z@x>"))
    assert first & reply and reply & third
    assert not other & (first | reply | third)


def test_reply_tokens_key_the_answers_to_one_reply_address() -> None:
    one = conversation_keys(_mail("<1@x>", to="reply+abcdefghij@reply.example"))
    two = conversation_keys(_mail("<2@x>", subject="Re: numbers [sb:abcdefghij]"))
    assert one & two


def test_an_email_without_ids_gets_a_lane_of_its_own_and_so_does_its_copy() -> None:
    raw = b"From: a@example.com\r\nSubject: no id\r\n\r\nbody\r\n"
    assert conversation_keys(raw) == conversation_keys(raw)
    assert conversation_keys(raw) != conversation_keys(raw + b"more")


def test_hostile_references_are_capped() -> None:
    refs = " ".join(f"<{i}@x>" for i in range(5000))
    keys = conversation_keys(_mail("<own@x>", references=refs))
    assert len(keys) == 100 and "id:<own@x>" in keys


async def test_lanes_keep_order_within_a_key_and_overlap_across_keys() -> None:
    lanes = Lanes(8)
    log: list[str] = []
    gate = asyncio.Event()

    async def slow(name: str) -> str:
        log.append(f"start {name}")
        await gate.wait()
        log.append(f"end {name}")
        return name

    async def quick(name: str) -> str:
        log.append(f"run {name}")
        return name

    first = await lanes.submit({"c1"}, lambda: slow("a1"))
    second = await lanes.submit({"c1"}, lambda: quick("a2"))
    other = await lanes.submit({"c2"}, lambda: quick("b1"))
    assert await other == "b1"
    assert "run a2" not in log  # waits for a1, while b1 went ahead
    gate.set()
    assert [await first, await second] == ["a1", "a2"]
    assert log.index("end a1") < log.index("run a2")


async def test_work_after_a_failure_in_its_lane_is_not_started() -> None:
    lanes = Lanes(4)
    ran: list[str] = []

    async def fail() -> None:
        raise ValueError("cannot")

    async def note(name: str) -> None:
        ran.append(name)

    failing = await lanes.submit({"k"}, fail)
    after = await lanes.submit({"k"}, lambda: note("after"))
    elsewhere = await lanes.submit({"j"}, lambda: note("elsewhere"))
    with pytest.raises(ValueError):
        await failing
    with pytest.raises(LaneBlocked):
        await after
    await elsewhere
    assert ran == ["elsewhere"]


async def test_lanes_bound_the_work_in_hand() -> None:
    lanes = Lanes(3)
    running = peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    tasks = [await lanes.submit({f"k{i}"}, work) for i in range(12)]
    await asyncio.gather(*tasks)
    assert peak == 3


async def test_the_checkpoint_passes_only_a_run_of_finished_uids() -> None:
    progress = _Progress(10)
    for uid in (11, 12, 13, 15):
        progress.started(uid)
    progress.done(12)
    assert progress.checkpoint == 10  # 11 is still in hand
    progress.done(11)
    assert progress.checkpoint == 12
    progress.dropped(13)  # failed: read again next time, and everything after it
    progress.done(15)
    assert progress.checkpoint == 12
    await asyncio.wait_for(progress.idle(), 1)


async def test_a_stop_while_waiting_for_a_free_lane_starts_nothing_more() -> None:
    """SIGTERM during a backlog: the email waiting for a lane is not started when one
    frees up, and the lane it would have taken is free again."""
    lanes, stop, release = Lanes(1), asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def work(name: str) -> None:
        started.append(name)
        await release.wait()

    first = await lanes.submit_unless(stop, ["a"], lambda: work("first"))
    assert first is not None
    waiting = asyncio.create_task(lanes.submit_unless(stop, ["b"], lambda: work("second")))
    await asyncio.sleep(0.01)
    stop.set()
    release.set()
    assert await waiting is None
    await first
    assert started == ["first"]
    assert await lanes.submit_unless(stop, ["c"], lambda: work("third")) is None
    again = await lanes.submit_unless(asyncio.Event(), ["d"], lambda: work("fourth"))
    assert again is not None
    await again
    assert started == ["first", "fourth"]
