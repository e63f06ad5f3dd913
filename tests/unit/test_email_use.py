"""Email as people use it, in the core: the headers of a reply to all and of a forward as
a mail client writes them, plus-addresses and catch-alls, blocks, automatic replies."""

from __future__ import annotations

import email
from email import policy

import pytest

from bot.autoreply import compose_autoreply, no_autoreply
from bot.blocks import EVERYWHERE, Block, BlockError, BlockList, blocked_form
from bot.flows.outgoing import compose_forward, compose_reply
from bot.headers import seal
from bot.mail import BodyFormat, InboundMail, SenderAuth, SenderTrust
from bot.model import Address, EntryKind, HistoryEntry
from bot.routes import Route, RouteBook, RouteError, address_tag

ORIGINAL = HistoryEntry(
    "e1", "c1", EntryKind.EMAIL, Address.email("alice@partner.test"),
    (Address.email("support@switchboard.test"),), 1_700_000_000.0, "Shall we meet?",
    subject="Offsite", meta={"message_id": "<m1@partner.test>",
                             "references": "<m0@partner.test>",
                             "to": "support@switchboard.test",
                             "cc": "carol@switchboard.test dave@elsewhere.test"})


def test_a_reply_to_all_is_one_email_to_the_author_copying_the_others() -> None:
    msg = compose_reply(
        bot_email="switchboard@switchboard.test", reply_domain="switchboard.test",
        sender_name="Bob", to=Address.email("alice@partner.test"), text="Thursday.",
        subject="Offsite", token="tok", message_key="d1", answering=ORIGINAL,
        history=[ORIGINAL], cc=[Address.email("carol@switchboard.test"),
                                Address.email("dave@elsewhere.test")])
    sender, recipients = seal(msg)
    # What Thunderbird's Reply All writes: To the author, Cc the rest, the chain kept.
    assert recipients == ["alice@partner.test", "carol@switchboard.test",
                          "dave@elsewhere.test"]
    assert sender == "switchboard@switchboard.test"
    read = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert read["To"] == "alice@partner.test"
    assert read["Cc"] == "carol@switchboard.test, dave@elsewhere.test"
    assert read["In-Reply-To"] == "<m1@partner.test>"
    assert read["References"] == "<m0@partner.test> <m1@partner.test>"
    assert "Bcc" not in read


def test_a_forward_carries_the_note_the_original_inline_and_attached() -> None:
    msg = compose_forward(
        bot_email="switchboard@switchboard.test", reply_domain="switchboard.test",
        sender_name="Bob", to=Address.email("dave@switchboard.test"), note="Dave, yours?",
        token="tok", message_key="d2", original=ORIGINAL)
    _, recipients = seal(msg)
    assert recipients == ["dave@switchboard.test"]  # nobody of the original is copied
    read = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert read["Subject"] == "Fwd: Offsite [sb:tok]"
    assert read["References"] == "<m1@partner.test>" and read["In-Reply-To"] is None
    assert read["Reply-To"] == "Bob <reply+tok@switchboard.test>"
    text = read.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("Dave, yours?")
    assert "From: alice@partner.test" in text and "Cc: carol@switchboard.test" in text
    (attached,) = list(read.iter_attachments())
    assert attached.get_content_type() == "message/rfc822"
    assert attached.get_filename() == "Offsite.eml"
    inner = attached.get_content()
    assert inner["Message-ID"] == "<m1@partner.test>" and "Shall we meet?" in str(
        inner.get_content())


def test_plus_addresses_and_catch_alls_find_their_route() -> None:
    book = RouteBook([Route("support@switchboard.test", "slack", "C1"),
                      Route("*@help.switchboard.test", "slack", "C2")])
    assert book.get("support+billing@switchboard.test").room == "C1"  # type: ignore[union-attr]
    assert address_tag("support+billing@switchboard.test") == "billing"
    assert book.get("anyone@help.switchboard.test").room == "C2"  # type: ignore[union-attr]
    assert book.get("sales@switchboard.test") is None
    # Switchboard's own reply and return addresses never fall through to a route.
    assert book.get("reply+abc@help.switchboard.test") is None
    assert address_tag("reply+abc@switchboard.test") == ""
    with pytest.raises(RouteError, match="plus-address"):
        book._check_address("support+x@switchboard.test")


class Blocks:
    def __init__(self, *blocks: Block) -> None:
        self.blocks = list(blocks)

    async def version(self) -> int:
        return len(self.blocks)

    async def all(self) -> tuple[int, list[Block]]:
        return len(self.blocks), list(self.blocks)

    async def add(self, block: Block) -> bool:
        self.blocks.append(block)
        return True

    async def remove(self, scope: str, who: str) -> bool:
        return False

    async def count(self, scope: str, who: str) -> None: ...


async def test_blocks_by_address_domain_subdomain_and_scope() -> None:
    blocks = BlockList(Blocks(Block("support@switchboard.test", "spam@deals.test"),
                              Block(EVERYWHERE, "@junk.test"),
                              Block("sales@switchboard.test", "@bulk.test")))
    await blocks.refresh(force=True)
    on_support = ["support@switchboard.test"]
    assert blocks.blocked(Address.email("spam@deals.test"), on_support) is not None
    assert blocks.blocked(Address.email("spam@deals.test"), ["sales@switchboard.test"]) is None
    assert blocks.blocked(Address.email("a@junk.test"), []) is not None  # everywhere
    assert blocks.blocked(Address.email("a@mx.junk.test"), []) is not None  # its subdomains
    assert blocks.blocked(Address.email("a@bulk.test"), on_support) is None
    assert blocks.blocked(Address.email("a@bulk.test"), ["sales@switchboard.test"]) is not None
    assert blocks.blocked(None, on_support) is None
    assert blocked_form("Spam@Deals.TEST") == "spam@deals.test"
    assert blocked_form("@Deals.test") == blocked_form("deals.test") == "@deals.test"
    with pytest.raises(BlockError):
        blocked_form("not a domain!")


def _mail(**headers: str) -> InboundMail:
    return InboundMail(
        message_id="<q1@partner.test>", has_message_id=True,
        sender=Address.email(headers.pop("sender", "alice@partner.test")), sender_name="Alice",
        to=(Address.email("sales@switchboard.test"),), cc=(), subject="Question", date=0.0,
        body="Hi", quoted="", signature="", body_format=BodyFormat.TEXT,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        auth=SenderAuth(SenderTrust.VERIFIED, "DKIM pass"))


def test_automatic_replies_go_to_people_only() -> None:
    assert no_autoreply(_mail()) is None
    assert "list" in str(no_autoreply(_mail(list_id="<news.example>")))
    assert "list" in str(no_autoreply(_mail(list_unsubscribe="<mailto:u@x>")))
    assert no_autoreply(_mail(auto_submitted="auto-replied")) is not None
    assert no_autoreply(_mail(precedence="bulk")) is not None
    assert no_autoreply(_mail(x_auto_response_suppress="OOF, AutoReply")) is not None
    assert no_autoreply(_mail(sender="noreply@partner.test")) is not None
    assert no_autoreply(_mail(sender="news-request@partner.test")) is not None
    unverified = _mail()
    unverified = InboundMail(**{**unverified.__dict__,
                                "auth": SenderAuth(SenderTrust.UNVERIFIED, "SPF fail")})
    assert "authenticated" in str(no_autoreply(unverified))
    reply = compose_autoreply(mail=_mail(), text="We have it.", mailbox="Sales",
                              bot_email="switchboard@switchboard.test",
                              reply_domain="switchboard.test", token="tok")
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<q1@partner.test>"
    assert str(reply["Subject"]) == "Re: Question [sb:tok]"
    assert seal(reply)[1] == ["alice@partner.test"]
