"""Addresses: normalisation and parsing, without I/O."""

from __future__ import annotations

import pytest

from bot.model import (
    ALLOWED_TRANSITIONS,
    Address,
    AddressError,
    DeliveryState,
    Network,
    same_organisation,
    sources_of,
)


@pytest.mark.parametrize("text", ["alice@example.com", "Alice@Example.COM",
                                  "Alice Example <alice@EXAMPLE.com>", "  alice@example.com. "])
def test_email_spellings_normalise_to_one_address(text: str) -> None:
    assert Address.email(text) == Address(Network.EMAIL, "alice@example.com")


def test_addresses_past_rfc_5321_limits_are_refused_with_the_limit() -> None:
    longest = "a" * 64 + "@" + ".".join(["b" * 60, "b" * 60, "b" * 59]) + ".example"
    assert len(longest) == 254 and Address.email(longest).value == longest
    with pytest.raises(AddressError, match="at most 64 characters"):
        Address.email("a" * 65 + "@example.com")
    with pytest.raises(AddressError, match="at most 254 characters"):
        Address.email("a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".example")  # 313
    with pytest.raises(AddressError, match="at most 64"):
        Address.email("ö" * 33 + "@example.com")  # 66 octets in UTF-8
    with pytest.raises(AddressError, match="at most 255"):
        Address.matrix("@" + "a" * 250 + ":example.org")


def test_international_domain_is_stored_in_ascii() -> None:
    assert Address.email("bob@bücher.example").value == "bob@xn--bcher-kva.example"


@pytest.mark.parametrize("text", ["", "alice", "alice@", "@example.com", "a..b@example.com",
                                  "alice@exa mple.com", "alice@localhost", "a\r\nb@example.com"])
def test_bad_email_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(AddressError):
        Address.email(text)


def test_chat_addresses() -> None:
    assert str(Address.slack("t0team1", "u0alice")) == "slack:T0TEAM1/U0ALICE"
    assert str(Address.matrix("@Alice:Example.org")) == "matrix:@alice:example.org"
    with pytest.raises(AddressError, match="TEAM/USER"):
        Address.slack("T0TEAM1", "not a user")
    with pytest.raises(AddressError, match="@user:server"):
        Address.matrix("alice")


@pytest.mark.parametrize(("text", "expected"), [
    ("@carol:switchboard.test", "matrix:@carol:switchboard.test"),
    ("T0TEAM1/U0BOB", "slack:T0TEAM1/U0BOB"),
    ("Bob <bob@example.com>", "email:bob@example.com"),
    ("email:bob@example.com", "email:bob@example.com"),
    ("slack:T0TEAM1/U0BOB", "slack:T0TEAM1/U0BOB"),
    ("matrix:@carol:switchboard.test", "matrix:@carol:switchboard.test"),
])
def test_parse_reads_what_people_type(text: str, expected: str) -> None:
    assert str(Address.parse(text)) == expected


def test_header_form_cannot_inject_headers() -> None:
    address = Address.email("alice@example.com")
    header = address.header_form("Alice\r\nBcc: victim@example.com")
    assert "\r" not in header and "\n" not in header
    assert header.endswith("<alice@example.com>")


def test_final_states_have_no_way_out_but_a_bounce() -> None:
    for state in DeliveryState:
        if state.is_final:
            bounce = {DeliveryState.FAILED} if state is DeliveryState.EMAILED else set()
            assert ALLOWED_TRANSITIONS[state] == bounce
        else:
            assert ALLOWED_TRANSITIONS[state]
    assert DeliveryState.PENDING in sources_of(DeliveryState.DELIVERED)
    assert DeliveryState.DELIVERED not in sources_of(DeliveryState.QUEUED)


def test_slack_accounts_of_two_workspaces_never_reach_each_other() -> None:
    one, other = Address.slack("T0ONE", "U0BOB"), Address.slack("T0TWO", "U0BOB")
    assert same_organisation(one, Address.slack("T0ONE", "U0ALICE"))
    assert not same_organisation(one, other)
    assert same_organisation(one, Address.email("alice@example.com"))
    assert same_organisation(one, Address.matrix("@alice:example.com"))
