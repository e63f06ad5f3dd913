"""`switchboard slack manifest`: valid YAML, the features the code handles, and every scope
the code's Web API calls need (the local Slack server's table of Slack's method
reference is the judge)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.runtime.cli import main
from bridges.slack.manifest import METHOD_SCOPES, SHORTCUT, SLASH_COMMAND, ManifestError, manifest
from tests.slackapi.server import SCOPES

SLACK_BRIDGE = Path(__file__).resolve().parents[2] / "bridges" / "slack"
# slack_sdk helpers that call more than the method their name says.
HELPERS = {"files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal"),
           "apps_connections_open": ("apps.connections.open",)}
# Calls of the Socket Mode client (the websocket), not of the Web API.
SOCKET_CALLS = {"send_socket_mode_response"}


def methods_called() -> set[str]:
    """Every Web API method the Slack bridge calls, read from its source."""
    found: set[str] = set()
    for path in SLACK_BRIDGE.glob("*.py"):
        source = path.read_text()
        found |= set(re.findall(r'(?:_call|api_call)\(\s*"([a-zA-Z]+\.[a-zA-Z.]+)"', source))
        for helper in re.findall(r"\bclient\.([a-z]+_[a-z0-9_]+)\(", source):
            if helper == "api_call" or helper in SOCKET_CALLS:
                continue
            found |= set(HELPERS.get(helper, (helper.replace("_", ".", 1),)))
    return found


def test_every_method_the_code_calls_has_its_scope_in_the_manifest() -> None:
    called = methods_called()
    assert {"chat.postMessage", "users.lookupByEmail", "views.open",
            "files.completeUploadExternal"} <= called  # the scan reads the bridge
    granted = set(manifest(socket_mode=True)["oauth_config"]["scopes"]["bot"])
    for method in sorted(called):
        assert method in SCOPES, f"{method}: not in the local Slack's method reference"
        needed = SCOPES[method]
        if method == "apps.connections.open":  # the app-level token's, not the bot's
            assert needed == "connections:write"
            continue
        assert needed is None or needed in granted, f"{method} needs {needed}"
        assert method in METHOD_SCOPES, f"{method}: the manifest does not say what it needs"


def test_http_mode_points_slack_at_the_events_endpoint(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["slack", "manifest", "--public-url", "https://sb.example.com/"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    url = "https://sb.example.com/slack/events"
    assert data["settings"]["socket_mode_enabled"] is False
    assert data["settings"]["interactivity"] == {"is_enabled": True, "request_url": url}
    (command,) = data["features"]["slash_commands"]
    assert command["command"] == SLASH_COMMAND and command["url"] == url
    (shortcut,) = data["features"]["shortcuts"]
    assert shortcut["callback_id"] == SHORTCUT and shortcut["type"] == "message"
    assert "commands" in data["oauth_config"]["scopes"]["bot"]


def test_socket_mode_needs_no_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slack", "manifest", "--socket-mode", "--name", "Mail «desk»"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in data["settings"]["interactivity"]
    assert "url" not in data["features"]["slash_commands"][0]
    assert data["display_information"]["name"] == "Mail «desk»"


def test_a_plain_http_url_is_refused() -> None:
    with pytest.raises(ManifestError, match="https"):
        manifest(public_url="http://sb.example.com")
    with pytest.raises(ManifestError, match="give --socket-mode"):
        manifest()


def test_the_removal_events_are_subscribed_in_both_modes() -> None:
    http = manifest(public_url="https://sb.example.com")
    assert http["settings"]["event_subscriptions"] == {
        "bot_events": ["app_uninstalled", "tokens_revoked", "message.channels",
                       "message.groups"],
        "request_url": "https://sb.example.com/slack/events"}
    assert http["oauth_config"]["redirect_urls"] == [
        "https://sb.example.com/slack/oauth_redirect"]
    socket = manifest(socket_mode=True, public_url="https://sb.example.com")
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in socket["settings"]["event_subscriptions"]
    assert "request_url" not in socket["settings"]["interactivity"]
    assert socket["oauth_config"]["redirect_urls"] == [
        "https://sb.example.com/slack/oauth_redirect"]
