"""Switchboard as a Matrix application service: its registration (what the homeserver
loads with `app_service_config_files`, and what Switchboard reads its tokens from) and
the user ids of the ghosts, one per email sender, in the namespace it claims."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridges.errors import MatrixError

GHOST_PREFIX = "email_"
DEFAULT_ID = "switchboard"


class BadRegistration(MatrixError):
    """The registration file is missing, unreadable or lacks what Switchboard needs."""


@dataclass(frozen=True)
class Registration:
    id: str
    url: str | None
    as_token: str  # Switchboard's, to the homeserver
    hs_token: str  # the homeserver's, to Switchboard
    sender_localpart: str  # the bot
    server_name: str
    ghost_prefix: str = GHOST_PREFIX
    rate_limited: bool = False  # as the file says (Switchboard writes false)

    @classmethod
    def new(cls, url: str, bot: str, *, id: str = DEFAULT_ID,
            kept: Registration | None = None) -> Registration:
        """A registration for the bot ``@localpart:server``; ``kept``'s tokens stay (the
        homeserver and a running Switchboard already share them)."""
        localpart, _, server = bot.removeprefix("@").partition(":")
        if not localpart or not server:
            raise BadRegistration(f"{bot!r} is not a Matrix user id (@bot:server)")
        return cls(id, url, kept.as_token if kept else secrets.token_urlsafe(32),
                   kept.hs_token if kept else secrets.token_urlsafe(32), localpart, server)

    @classmethod
    def load(cls, path: str | Path, server_name: str) -> Registration:
        """The registration at ``path``, for the homeserver named ``server_name``."""
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BadRegistration(f"cannot read the application service registration "
                                  f"{path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise BadRegistration(f"{path} is not an application service registration")
        missing = [k for k in ("id", "as_token", "hs_token", "sender_localpart")
                   if not isinstance(raw.get(k), str) or not raw[k]]
        if missing:
            raise BadRegistration(f"{path} lacks {', '.join(missing)}: write it again with "
                                  "`switchboard matrix registration --url URL`")
        return cls(raw["id"], raw.get("url"), raw["as_token"], raw["hs_token"],
                   raw["sender_localpart"], server_name, _ghost_prefix(raw),
                   raw.get("rate_limited") is not False)

    @property
    def bot(self) -> str:
        return f"@{self.sender_localpart}:{self.server_name}"

    def ghost(self, email: str) -> str:
        """The ghost of an email address: stable, lowercase, of no characters a
        homeserver refuses, and not the address itself (a user id outlives erasure)."""
        digest = hashlib.sha256(f"{self.id}\0{email.lower()}".encode()).hexdigest()[:20]
        return f"@{self.ghost_prefix}{digest}:{self.server_name}"

    def is_ghost(self, user_id: str) -> bool:
        return user_id.startswith(f"@{self.ghost_prefix}") and \
            user_id.endswith(f":{self.server_name}")

    def document(self) -> dict[str, Any]:
        """The registration as the homeserver reads it."""
        return {
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            # Posts come from Switchboard's own users: the homeserver's limits are for people.
            "rate_limited": self.rate_limited,
            "namespaces": {
                "users": [{"exclusive": True,
                           "regex": f"@{re.escape(self.ghost_prefix)}.*:"
                                    f"{re.escape(self.server_name)}"}],
                "aliases": [],
                "rooms": [],
            },
            # End-to-end encryption: the bot's own device keeps reading encrypted rooms
            # through its sync (see the README), so no experimental flag is asked for.
            "receive_ephemeral": False,
        }

    def write(self, path: str | Path) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = ("# Switchboard's application service registration: give this file to the\n"
                "# homeserver (Synapse: app_service_config_files) and to Switchboard\n"
                "# (SWITCHBOARD_MATRIX_REGISTRATION). Its tokens are secrets.\n"
                + yaml.safe_dump(self.document(), sort_keys=False))
        temporary = target.with_suffix(target.suffix + ".new")
        temporary.write_text(text)
        temporary.chmod(0o600)
        temporary.replace(target)


def _ghost_prefix(raw: dict[str, Any]) -> str:
    """The ghosts' localpart prefix, from the exclusive user namespace ``email_.*``."""
    for entry in (raw.get("namespaces") or {}).get("users") or []:
        regex = str(entry.get("regex", "")) if isinstance(entry, dict) else ""
        found = re.fullmatch(r"@((?:[a-z0-9._=/-]|\\.)+)\.\*:.+", regex)
        if found and entry.get("exclusive"):
            return found.group(1).replace("\\", "")
    raise BadRegistration("the registration claims no exclusive user namespace for email "
                          "senders (`@email_.*:server`): write it again with "
                          "`switchboard matrix registration --url URL`")
