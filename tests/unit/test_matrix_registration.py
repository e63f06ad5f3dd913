"""The application service's registration as the homeserver and Switchboard read it, and
the names its ghosts show: what a hostile From header cannot make them say."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from bridges.matrix.ghosts import display_name, split_sender
from bridges.matrix.registration import BadRegistration, Registration


def test_a_written_registration_reads_back_and_keeps_its_tokens(tmp_path: Path) -> None:
    path = tmp_path / "appservice.yaml"
    first = Registration.new("http://10.0.0.5:8480", "@switchboard:example.org")
    first.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # its tokens are secrets
    document = yaml.safe_load(path.read_text())
    assert document["rate_limited"] is False and document["sender_localpart"] == "switchboard"
    (users,) = document["namespaces"]["users"]
    assert users == {"exclusive": True, "regex": r"@email_.*:example\.org"}
    loaded = Registration.load(path, "example.org")
    assert loaded == first and loaded.bot == "@switchboard:example.org"
    again = Registration.new("http://10.0.0.6:8480", loaded.bot, kept=loaded)
    assert (again.as_token, again.hs_token) == (first.as_token, first.hs_token)
    assert again.url == "http://10.0.0.6:8480"
    fresh = Registration.new("http://10.0.0.6:8480", loaded.bot)
    assert fresh.as_token != first.as_token and fresh.as_token != fresh.hs_token


def test_ghosts_are_stable_claimed_and_do_not_show_the_address() -> None:
    registration = Registration.new("http://127.0.0.1:1", "@sb:example.org")
    ghost = registration.ghost("Dana@Partner.Example")
    assert ghost == registration.ghost("dana@partner.example")
    assert ghost.startswith("@email_") and ghost.endswith(":example.org")
    assert "dana" not in ghost and registration.is_ghost(ghost)
    assert not registration.is_ghost("@sb:example.org")
    assert not registration.is_ghost("@email_abc:elsewhere.org")


@pytest.mark.parametrize(("text", "why"), [
    ("", "is not an application service registration"),
    ("id: x\nas_token: a\n", "lacks hs_token, sender_localpart"),
    ("id: x\nas_token: a\nhs_token: b\nsender_localpart: sb\n"
     "namespaces: {users: [{exclusive: false, regex: '@email_.*:x'}]}\n",
     "claims no exclusive user namespace"),
    ("id: [unclosed\n", "cannot read"),
])
def test_a_bad_registration_says_what_is_wrong(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "appservice.yaml"
    path.write_text(text)
    with pytest.raises(BadRegistration, match=why):
        Registration.load(path, "example.org")


def test_a_missing_registration_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadRegistration, match=r"nope\.yaml"):
        Registration.load(tmp_path / "nope.yaml", "example.org")


@pytest.mark.parametrize(("sender", "shown"), [
    ("Dana Example <dana@partner.example>", "Dana Example (email)"),
    ("dana@partner.example", "dana@partner.example (email)"),
    # What the name would hide behind goes: overrides, zero-width and control characters.
    ("Dana\u202e\u200b Exa\u2066mple\x07 <dana@partner.example>", "Dana Example (email)"),
    # Brackets, quotes and commas are a name's own characters (the card's are decoded).
    ("Support, Team [bot] <team@partner.example>", "Support, Team [bot] (email)"),
    ("Line\r\nBreak\tTab <x@partner.example>", "Line Break Tab (email)"),
    ("\u200b\u202e <x@partner.example>", "x@partner.example (email)"),
    ("A" * 200 + " <x@partner.example>", "A" * 63 + "… (email)"),
])
def test_a_ghost_is_named_as_a_person_would_read_the_sender(sender: str, shown: str) -> None:
    assert display_name(sender) == shown


def test_a_card_sender_splits_into_name_and_address() -> None:
    assert split_sender("Dana <Dana@Partner.Example>") == ("Dana", "dana@partner.example")
    assert split_sender("a <b> <c@d.example>") == ("a <b>", "c@d.example")
    assert split_sender("(unknown sender)") == ("", "(unknown sender)")
