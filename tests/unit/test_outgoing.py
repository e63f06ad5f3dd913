"""Outgoing mail: threading headers, and no header injection from chat input."""

from __future__ import annotations

from bot.flows.outgoing import compose_reply, reply_subject
from bot.model import Address, EntryKind, HistoryEntry


def test_header_injection_from_chat_is_impossible() -> None:
    answering = HistoryEntry("e1", "c1", EntryKind.EMAIL, Address.email("a@partner.test"), (),
                             1.0, "hi", subject="Hello\r\nBcc: victim@example.com",
                             meta={"message_id": "<m1@partner.test>"})
    msg = compose_reply(
        bot_email="switchboard@switchboard.test", reply_domain="switchboard.test",
        sender_name="Mallory\r\nBcc: victim@example.com\nX-Evil: 1",
        to=Address.email("a@partner.test"), text="body\r\nBcc: nope",
        subject="Hello\r\nBcc: victim@example.com", token="abcdefgh",
        message_key="d1", answering=answering, history=[answering])
    raw = msg.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.splitlines()
             if line and not line[:1].isspace()]
    assert b"bcc" not in names and b"x-evil" not in names
    assert msg["In-Reply-To"] == "<m1@partner.test>"
    assert msg["References"] == "<m1@partner.test>"
    assert str(msg["Subject"]) == "Re: Hello Bcc: victim@example.com [sb:abcdefgh]"


def test_new_threads_have_no_re() -> None:
    assert reply_subject("Lunch", "tok", is_reply=False) == "Lunch [sb:tok]"
    assert reply_subject("Re: Lunch", "tok") == "Re: Lunch [sb:tok]"


def test_matrix_errors_are_classified_by_status_and_errcode() -> None:
    from types import SimpleNamespace

    from nio import RoomSendError

    from bridges.matrix.client import _transient

    def answer(errcode: str, status: int | None) -> RoomSendError:
        response = RoomSendError.from_dict({"errcode": errcode, "error": "x"}, "!r:x")
        response.transport_response = SimpleNamespace(status=status)  # type: ignore[assignment]
        return response

    assert _transient(answer("M_LIMIT_EXCEEDED", 429))
    assert _transient(answer("M_UNKNOWN", 502))
    assert _transient(answer("M_UNKNOWN", 500))
    assert not _transient(answer("M_FORBIDDEN", 403))
    assert not _transient(answer("M_NOT_FOUND", 404))
    assert not _transient(answer("M_TOO_LARGE", 413))
    assert _transient(RoomSendError("the homeserver answered no JSON", "503"))
    assert not _transient(RoomSendError("forbidden", "M_FORBIDDEN"))
