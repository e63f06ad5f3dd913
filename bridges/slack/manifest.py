"""The Slack app's manifest, made from what the code uses: paste the output of
`switchboard slack manifest` into Slack's "Create New App" -> "From an app manifest".

Scopes are listed per Web API method this bridge calls (Slack's method reference says
which each needs); a test reads the bridge's source and fails when it calls a method
whose scope is not here."""

from __future__ import annotations

from typing import Any

import yaml

# Where Slack reaches the app, and the names the app's settings and the code share.
ENDPOINT = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
SHORTCUT = "reply_by_email_shortcut"  # the message shortcut's callback id
SLASH_COMMAND = "/switchboard"
# Events the app subscribes to: a workspace removing it, or revoking its token.
# Messages in channels the bot is in: a plain reply in an email's thread may answer it
# (the route's ``replies=email``).
BOT_EVENTS = ("app_uninstalled", "tokens_revoked", "message.channels", "message.groups")

# Web API method -> the bot scopes it needs for what Switchboard does with it. History
# and membership reads cover public and private channels and the bot's DMs.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.open": ("im:write",),
    "conversations.history": ("channels:history", "groups:history", "im:history"),
    "conversations.replies": ("channels:history", "groups:history", "im:history"),
    "conversations.members": ("channels:read", "groups:read"),
    "conversations.info": ("channels:read", "groups:read"),
    "users.getPresence": ("users:read",),
    "users.info": ("users:read",),
    "users.lookupByEmail": ("users:read.email",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "views.open": (),
    "apps.connections.open": (),  # with the app-level token (connections:write), not the bot's
}
FEATURE_SCOPES = ("commands",)  # the slash command and the message shortcut
BOT_SCOPES: tuple[str, ...] = tuple(sorted(
    {s for scopes in METHOD_SCOPES.values() for s in scopes} | set(FEATURE_SCOPES)))


class ManifestError(ValueError):
    """The manifest cannot be made as asked."""


def manifest(*, socket_mode: bool = False, public_url: str | None = None,
             name: str = "Switchboard") -> dict[str, Any]:
    """The manifest for Slack calling ``public_url`` over HTTPS, or for Socket Mode (where
    ``public_url``, if given, only serves the install pages of the OAuth flow)."""
    if not socket_mode and not public_url:
        raise ManifestError("give --socket-mode, --public-url URL, or both (Socket Mode, "
                            "with workspaces installing the app at URL)")
    endpoint = None
    if public_url:
        if not public_url.startswith("https://"):
            raise ManifestError(f"{public_url} is not an https:// URL: Slack calls only HTTPS")
        if not socket_mode:
            endpoint = public_url.rstrip("/") + ENDPOINT
    command: dict[str, Any] = {
        "command": SLASH_COMMAND, "description": "Link your email, see usage, or get help",
        "usage_hint": "help", "should_escape": False}
    interactivity: dict[str, Any] = {"is_enabled": True}
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    if endpoint:
        command["url"] = endpoint
        interactivity["request_url"] = endpoint
        events["request_url"] = endpoint
    oauth: dict[str, Any] = {"scopes": {"bot": list(BOT_SCOPES)}}
    if public_url:
        oauth["redirect_urls"] = [public_url.rstrip("/") + REDIRECT_PATH]
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name, "description": "Answer email from chat and chat from email."},
        "features": {
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [command],
            "shortcuts": [{"name": "Reply by email", "type": "message",
                           "callback_id": SHORTCUT,
                           "description": "Answer this message by email, with the "
                                          "conversation so far"}],
        },
        "oauth_config": oauth,
        "settings": {"event_subscriptions": events, "interactivity": interactivity,
                     "org_deploy_enabled": False,
                     "socket_mode_enabled": socket_mode, "token_rotation_enabled": False},
    }


def manifest_yaml(**options: Any) -> str:
    return str(yaml.safe_dump(manifest(**options), sort_keys=False, allow_unicode=True))
