"""Routes' options as people type them, and which mail a route's rules hold back."""

from __future__ import annotations

import pytest

from bot.model import Address, Network
from bot.permissions import ThreadReplies
from bot.room_commands import RoomCommandError, _options
from bot.routes import (
    AttachmentRule,
    Route,
    RouteBook,
    SenderRule,
    display_name,
    hold_for,
    route_option,
)
from bot.settings import Settings, SettingsError

EVE = Address.email("eve@partner.test")


def test_options_and_name_from_route_add() -> None:
    chosen = _options(["Support", "desk", "replies=email", "senders=verified"], naming=True)
    assert chosen == {"name": "Support desk", "replies": ThreadReplies.EMAIL,
                      "senders": SenderRule.VERIFIED}
    assert _options(["name=Front", "desk", "attachments=hold"], naming=False) == {
        "name": "Front desk", "attachments": AttachmentRule.HOLD}
    assert _options(["replies=default"], naming=False) == {"replies": None}
    with pytest.raises(RoomCommandError, match="not an option"):
        _options(["stray"], naming=False)
    with pytest.raises(RoomCommandError, match="use post, names or hold"):
        _options(["attachments=sometimes"], naming=True)


def test_display_names_are_one_printable_line() -> None:
    assert display_name('  "Help\n\u202edesk\x00"  ') == "Help desk"
    with pytest.raises(ValueError, match="at most"):
        display_name("x" * 81)
    with pytest.raises(ValueError, match="not a route option"):
        route_option("colour", "red")


def test_what_a_route_holds_back() -> None:
    strict = Route("billing@example.org", "slack", "C1", senders=SenderRule.VERIFIED,
                   attachments=AttachmentRule.HOLD)
    held = hold_for(strict, EVE, False, [])
    assert held is not None and held.kind == "unverified"
    assert hold_for(strict, EVE, True, []) is None
    attachment = hold_for(strict, EVE, True, ["invoice.pdf.exe"])
    assert attachment is not None and attachment.kind == "attachment"
    allowed = Route("billing@example.org", "slack", "C1", senders=SenderRule.VERIFIED,
                    allowed=(EVE.value,))
    assert hold_for(allowed, EVE, False, ["x.exe"]) is None
    assert hold_for(Route("a@example.org", "slack", "C1"), None, False, ["x.exe"]) is None


def test_the_strictest_route_of_a_room_rules_its_threads() -> None:
    routes = RouteBook([Route("a@example.org", "matrix", "!r", replies=ThreadReplies.EMAIL),
                        Route("b@example.org", "matrix", "!r", senders=SenderRule.VERIFIED)])
    strictest = routes.strictest(Network.MATRIX, "!r")
    assert strictest is not None and strictest.address == "b@example.org"
    assert routes.replies_rule(ThreadReplies.INTERNAL)("!r") is ThreadReplies.EMAIL
    assert routes.replies_rule(ThreadReplies.INTERNAL)("!other") is ThreadReplies.INTERNAL


def test_route_options_in_the_settings() -> None:
    env = {"SWITCHBOARD_BOT_EMAIL": "sb@example.org", "SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1",
           "SWITCHBOARD_SLACK_SIGNING_SECRET": "s",
           "SWITCHBOARD_ROUTES": "help@help.example.org=slack:C0HELP;senders=verified;"
                                 "attachments=names;name=Help desk",
           "SWITCHBOARD_REVIEW_ROOM": "slack:C0REVIEW"}
    settings = Settings.load(env)
    route = settings.routes[0]
    assert (route.senders, route.attachments, route.name) == (
        SenderRule.VERIFIED, AttachmentRule.NAMES, "Help desk")
    assert settings.receive_domains == ("example.org", "help.example.org")
    assert settings.review_room == ("slack", "C0REVIEW")
    with pytest.raises(SettingsError, match="use any or verified"):
        Settings.load({**env, "SWITCHBOARD_ROUTES": "a@example.org=slack:C1;senders=some"})
    with pytest.raises(SettingsError, match="not a Slack channel id"):
        Settings.load({**env, "SWITCHBOARD_REVIEW_ROOM": "slack:nope"})
