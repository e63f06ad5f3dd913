"""Search in the core: what people type, the query the index gets (the viewers inside
it), snippets as a notice shows them, paging."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bot.model import Address, ChatTarget, EntryKind, Network
from bot.search import (
    PAGE,
    Search,
    SearchError,
    SearchHit,
    SearchPage,
    SearchQuery,
    marked,
    parse_search,
    room_token,
    viewer_token,
)
from storage.search import query_text

ROOMS = {"c0support1": "slack:room:C0SUPPORT1"}


def test_what_people_type() -> None:
    q = parse_search('refund "full amount" from:alice@partner.test to:<mailto:b@x.test|b@x.test> '
                     'in:C0SUPPORT1 before:2026-12-01 after:2026-11-01 has:attachment page:2',
                     ROOMS)
    assert q.words == ("refund",) and q.phrases == ("full amount",)
    assert q.senders == (Address.email("alice@partner.test"),)
    assert q.recipients == (Address.email("b@x.test"),)
    assert q.rooms == (room_token("slack:room:C0SUPPORT1"),)
    assert q.attachments and q.page == 2
    assert q.before is not None and q.after is not None and q.after < q.before
    for bad in ('"open quote', "in:#nowhere", "before:yesterday", "from:not an address!"):
        with pytest.raises(SearchError):
            parse_search(bad, ROOMS)


def test_the_index_query_holds_the_viewers_and_escapes_what_was_typed() -> None:
    q = parse_search('refund "full amount" from:alice@partner.test has:attachment', ROOMS)
    text = query_text(q, ["pa", "rb"])
    assert text.startswith('refund "full amount" ')
    assert r"@from:{email\:alice\@partner\.test}" in text
    assert "@has:{attachment}" in text and text.endswith("@viewers:{pa|rb}")
    assert "@viewers" not in query_text(q, None)  # an administrator: everything
    assert query_text(q, []).endswith("@viewers:{nobody}")  # nobody's tokens: nothing
    # Query syntax typed as words is only words.
    assert query_text(parse_search("@viewers:{x} -foo|bar*", ROOMS), ["p"]) == \
        "viewers x foo bar @viewers:{p}"


def test_tokens_are_the_same_for_every_spelling() -> None:
    assert viewer_token(Address.email("Alice@Partner.test")) == \
        viewer_token(Address.email("alice@partner.test"))
    assert viewer_token(Address.email("a@x.test")) != viewer_token(Address.email("b@x.test"))


def test_snippets_mark_the_words_and_drop_the_senders_markup() -> None:
    q = SearchQuery(words=("refund",), phrases=("full amount",))
    assert marked("We *will* Refunds the   full amount `now`", q) == \
        "We will *Refunds* the *full* *amount* now"


class Index:
    def __init__(self, total: int) -> None:
        self.total = total
        self.asked: list[Sequence[str] | None] = []

    async def unavailable(self) -> str | None:
        return None

    async def search(self, query: SearchQuery, viewers: Sequence[str] | None, offset: int,
                     limit: int) -> SearchPage:
        self.asked.append(viewers)
        hits = tuple(SearchHit("c1", f"e{i}", EntryKind.EMAIL, "a@x.test", 0.0, "S", "refund")
                     for i in range(offset, min(offset + limit, self.total)))
        return SearchPage(self.total, hits)


class Book:
    async def resolve(self, address: Address) -> None:
        return None


async def test_paging_with_a_button_and_viewers_of_the_asker() -> None:
    index = Index(PAGE + 2)
    search = Search(index, Book(), {},  # type: ignore[arg-type]
                    rooms=lambda: [ChatTarget(Network.SLACK, room="C0SUPPORT1")])
    bob = Address.slack("T0TEAM01", "U0BOB001")
    first = await search.run(bob, "refund")
    assert f"{PAGE + 2} found" in first.text
    (more,) = first.choices
    assert more.value == "refund page:2" and more.kind == "query"
    second = await search.run(bob, more.value)
    assert "(6-7)" in second.text and not second.choices
    assert index.asked[0] == [viewer_token(bob)]  # not in any room it could ask about
