"""Folding quoted replies and signatures away without losing text."""

from __future__ import annotations

from bot.text import shorten, split_reply


def test_attribution_wrapped_over_two_lines() -> None:
    text = ("Sounds good.\n\nOn Tue, 24 Nov 2026 at 09:15, Alice Example\n"
            "<alice@partner.test> wrote:\n> earlier\n> text\n")
    split = split_reply(text)
    assert split.body == "Sounds good."
    assert split.quoted.startswith("On Tue") and "> earlier" in split.quoted


def test_outlook_original_message() -> None:
    text = "Yes.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nSubject: x\n\nold"
    split = split_reply(text)
    assert split.body == "Yes."
    assert split.quoted.startswith("-----Original Message-----")


def test_bottom_quote_only() -> None:
    split = split_reply("Agreed\n\n> the plan\n> is fine")
    assert (split.body, split.quoted) == ("Agreed", "> the plan\n> is fine")


def test_interleaved_replies_are_kept_whole() -> None:
    text = "> question one\nanswer one\n> question two\nanswer two"
    assert split_reply(text).body == text


def test_all_quoted_is_never_shown_empty() -> None:
    text = "> only quoted text\n> nothing new"
    assert split_reply(text).body == text


def test_mobile_signature() -> None:
    split = split_reply("On my way\n\nSent from my iPhone")
    assert (split.body, split.signature) == ("On my way", "Sent from my iPhone")


def test_shorten_cuts_at_a_word() -> None:
    assert shorten("short", 10) == "short"
    cut = shorten("alpha beta gamma delta epsilon", 20)
    assert cut == "alpha beta gamma…" and len(cut) <= 20
