"""What a running Switchboard keeps for itself, against both stores (memory and Redis):
mailbox checkpoints, leases, refused and set-aside mail, rate limits, delivery claims,
verification codes, the Matrix session and the audit trail."""

from __future__ import annotations

import asyncio
import time

from bot.audit import AuditAction, AuditEvent
from bot.model import Address, Delivery, DeliveryState, Refusal
from bot.stores import Checkpoint
from tests.contract.conftest import AnyStore

BOB = Address.slack("T0TEAM1", "U0BOB")
ALICE = Address.email("alice@example.com")


def refusal(i: int) -> Refusal:
    return Refusal(1_700_000_000.0 + i, "imap:INBOX", f"<m{i}@x>", "a@example.com",
                   f"subject {i}", "no route")


async def test_checkpoints_are_kept_per_mailbox(store: AnyStore) -> None:
    ingest = store.ingest
    assert await ingest.checkpoint("bot@host", "INBOX") is None
    await ingest.save_checkpoint("bot@host", "INBOX", Checkpoint(7, 42))
    await ingest.save_checkpoint("bot@host", "Support", Checkpoint(7, 3))
    assert await ingest.checkpoint("bot@host", "INBOX") == Checkpoint(7, 42)
    assert await ingest.checkpoint("bot@host", "Support") == Checkpoint(7, 3)


async def test_refused_mail_is_listed_oldest_first(store: AnyStore) -> None:
    for i in range(5):
        await store.ingest.refuse(refusal(i))
    assert [r.message_id for r in await store.ingest.refusals(3)] == \
        ["<m2@x>", "<m3@x>", "<m4@x>"]


async def test_a_failing_message_is_counted_then_set_aside(store: AnyStore) -> None:
    ingest = store.ingest
    assert [await ingest.count_failure("box:1:9") for _ in range(3)] == [1, 2, 3]
    await ingest.set_aside("box:1:9", b"Subject: poison\r\n\r\n\xff", refusal(9))
    assert await ingest.set_aside_message("box:1:9") == b"Subject: poison\r\n\r\n\xff"
    assert (await ingest.refusals())[-1].message_id == "<m9@x>"
    assert await ingest.count_failure("box:1:9") == 1  # counted afresh
    assert await ingest.set_aside_message("box:1:10") is None


async def test_a_lease_has_one_holder_until_released_or_expired(store: AnyStore) -> None:
    ingest = store.ingest
    assert await ingest.take_lease("imap:box", "one", 0.5)
    assert await ingest.take_lease("imap:box", "one", 0.5)  # renewed by its holder
    assert not await ingest.take_lease("imap:box", "two", 0.5)
    await ingest.release_lease("imap:box", "two")  # not two's to release
    assert not await ingest.take_lease("imap:box", "two", 0.5)
    await ingest.release_lease("imap:box", "one")
    assert await ingest.take_lease("imap:box", "two", 0.3)
    await asyncio.sleep(0.4)
    assert await ingest.take_lease("imap:box", "one", 0.5)


async def test_rate_limits_count_events_once_per_window(store: AnyStore) -> None:
    rates = store.rates
    name = f"sender:{time.monotonic_ns()}"
    assert [await rates.hit(name, 2, 60, f"<m{i}@x>") for i in range(3)] == [True, True, False]
    again = f"other:{time.monotonic_ns()}"
    assert await rates.hit(again, 1, 60, "<same@x>")
    assert await rates.hit(again, 1, 60, "<same@x>")  # a re-read of the same email
    plain = f"plain:{time.monotonic_ns()}"
    assert [await rates.hit(plain, 2, 60) for _ in range(3)] == [True, True, False]


async def test_one_claim_at_a_time_kept_only_by_its_holder(store: AnyStore) -> None:
    deliveries = store.deliveries
    await deliveries.create(Delivery("d1", "c1", BOB, ALICE, "hi", DeliveryState.PENDING,
                                     time.time()))
    assert await deliveries.claim("d1", "worker-a", 0.5)
    assert not await deliveries.claim("d1", "worker-b", 0.5)
    assert await deliveries.extend("d1", "worker-a", 0.5)
    assert not await deliveries.extend("d1", "worker-b", 0.5)
    await deliveries.release("d1")
    assert await deliveries.claim("d1", "worker-b", 0.3)
    await asyncio.sleep(0.4)
    assert not await deliveries.extend("d1", "worker-b", 0.5)  # it lapsed
    assert await deliveries.claim("d1", "worker-a", 0.5)
    counts = await deliveries.count_by_state()
    assert counts[DeliveryState.PENDING] == 1 and counts[DeliveryState.DELIVERED] == 0


async def test_a_verification_code_proves_an_address_once(store: AnyStore) -> None:
    code = await store.verifications.issue(BOB, ALICE, ttl=60)
    assert len(code) == 6 and code.isdigit()
    wrong = "000000" if code != "000000" else "111111"
    assert "wrong" in str(await store.verifications.check(BOB, wrong))
    assert await store.verifications.check(BOB, f" {code} ") == ALICE
    assert "no pending link" in str(await store.verifications.check(BOB, code))


async def test_five_wrong_codes_end_the_attempt(store: AnyStore) -> None:
    code = await store.verifications.issue(BOB, ALICE, ttl=60)
    wrong = "000000" if code != "000000" else "111111"
    answers = [str(await store.verifications.check(BOB, wrong)) for _ in range(5)]
    assert "last try" in answers[-1]
    assert "no pending link" in str(await store.verifications.check(BOB, code))


async def test_the_matrix_session_and_dm_rooms(store: AnyStore) -> None:
    state = store.matrix
    assert await state.session("@bot:x") is None
    await state.save_session("@bot:x", "DEVICE", "token")
    assert await state.session("@bot:x") == ("DEVICE", "token")
    await state.forget_session("@bot:x")
    assert await state.session("@bot:x") is None
    assert await state.claim_dm_room("@alice:x", "!first:x") == "!first:x"
    assert await state.claim_dm_room("@alice:x", "!second:x") == "!first:x"
    assert await state.dm_room("@alice:x") == "!first:x"
    assert await state.dm_room("@bob:x") is None
    assert await state.sync_token("@bot:x") is None
    await state.save_sync_token("@bot:x", "s1_2")
    await state.save_sync_token("@bot:x", "s3_4")
    assert await state.sync_token("@bot:x") == "s3_4"
    assert await state.keys_device("@bot:x") is None
    await state.save_keys_device("@bot:x", "DEVICE")
    assert await state.keys_device("@bot:x") == "DEVICE"
    await state.save_keys_device("@bot:x", None)
    assert await state.keys_device("@bot:x") is None


async def test_the_audit_trail_reads_newest_first(store: AnyStore) -> None:
    for i in range(3):
        await store.audit.record(AuditEvent(AuditAction.MAIL_SENT, "switchboard",
                                            f"to{i}@example.com", "reply", at=1000.0 + i))
    recent = await store.audit.recent(2)
    assert [e.target for e in recent] == ["to2@example.com", "to1@example.com"]
    assert recent[0] == AuditEvent(AuditAction.MAIL_SENT, "switchboard", "to2@example.com",
                                   "reply", 1002.0)


async def test_slack_installations_are_kept_per_workspace(store: AnyStore) -> None:
    spaces = store.workspaces
    await spaces.save("T0ONE", {"team_id": "T0ONE", "bot_token": "xoxb-1"})
    await spaces.save("T0TWO", {"team_id": "T0TWO", "bot_token": "xoxb-2"})
    await spaces.save("T0ONE", {"team_id": "T0ONE", "bot_token": "xoxb-1b"})  # re-installed
    assert await spaces.teams() == ["T0ONE", "T0TWO"]
    assert (await spaces.find("T0ONE") or {})["bot_token"] == "xoxb-1b"
    assert await spaces.remove("T0ONE") is True
    assert await spaces.remove("T0ONE") is False
    assert await spaces.find("T0ONE") is None
    assert await spaces.teams() == ["T0TWO"]


async def test_an_oauth_state_is_good_once_and_not_after_it_expires(store: AnyStore) -> None:
    spaces = store.workspaces
    state = await spaces.issue_state(60)
    assert len(state) >= 24 and state != await spaces.issue_state(60)
    assert await spaces.consume_state(state) is True
    assert await spaces.consume_state(state) is False  # replayed
    assert await spaces.consume_state("forged-state") is False
    short = await spaces.issue_state(1)
    await asyncio.sleep(1.2)
    assert await spaces.consume_state(short) is False


async def test_a_slack_delivery_is_handled_the_first_time_only(store: AnyStore) -> None:
    spaces = store.workspaces
    assert await spaces.first_time("Ev1", 60) is True
    assert await spaces.first_time("Ev1", 60) is False
    assert await spaces.first_time("Ev2", 60) is True


async def test_a_matrix_post_handed_over_is_answered_to_its_sender(store: AnyStore) -> None:
    state = store.matrix

    async def holder() -> None:
        request = await state.take_handed(5)
        assert request is not None and request["room"] == "!r:x"
        await state.answer_handed(str(request["id"]), {"event_id": "$e1"})

    serving = asyncio.create_task(holder())
    answer = await state.hand_over({"room": "!r:x", "content": {"body": "hi"}, "key": "k"}, 5)
    await serving
    assert answer == {"event_id": "$e1"}
    assert await state.hand_over({"room": "!r:x", "content": {}, "key": "k2"}, 0.2) is None
    assert (await state.take_handed(1) or {})["key"] == "k2"  # still there for the holder
