"""Bolt's installation and OAuth-state stores, kept in the store the runtime gives.

Workspaces install the app through Slack's OAuth v2 flow (``/slack/install``, then
``/slack/oauth_redirect``); each installation, with its bot token, is kept per team, and
every event from that team is answered with that team's token. Only what serving a
workspace needs is kept: no user token is asked for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.error import BoltError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bot.stores import Workspaces

log = logging.getLogger(__name__)

STATE_TTL = 600  # seconds an admin has from /slack/install to approving on Slack
KEPT = ("app_id", "team_id", "team_name", "bot_token", "bot_id", "bot_user_id", "user_id",
        "token_type")


def _record(installation: Installation) -> dict[str, object]:
    record: dict[str, object] = {k: getattr(installation, k) for k in KEPT
                                 if getattr(installation, k) is not None}
    record["bot_scopes"] = ",".join(installation.bot_scopes or [])
    record["installed_at"] = float(installation.installed_at or time.time())
    return record


def _installation(record: dict[str, Any]) -> Installation:
    fields: dict[str, Any] = {k: record.get(k) for k in KEPT if k != "user_id"}
    return Installation(**fields, user_id=str(record.get("user_id") or ""),
                        bot_scopes=str(record.get("bot_scopes") or ""),
                        installed_at=float(record.get("installed_at") or 0))


class InstallationStore(AsyncInstallationStore):
    """One installation per workspace; Enterprise Grid org-wide installs are refused
    (``is_enterprise_install``), as nothing here is kept per organisation."""

    def __init__(self, workspaces: Workspaces, allowed: tuple[str, ...] = ()) -> None:
        self.workspaces = workspaces
        self.allowed = allowed  # empty: any workspace

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        if installation.is_enterprise_install or not installation.team_id:
            raise BoltError("an org-wide (Enterprise Grid) install is not supported: install "
                            "Switchboard into each workspace")
        if self.allowed and installation.team_id not in self.allowed:
            log.warning("Slack workspace %s (%s) tried to install Switchboard and is not "
                        "in SWITCHBOARD_SLACK_INSTALL_TEAMS: refused", installation.team_id,
                        installation.team_name)
            # Bolt answers its failure page for its own error type.
            raise BoltError(f"workspace {installation.team_id} may not install this "
                            "Switchboard")
        await self.workspaces.save(installation.team_id, _record(installation))
        log.info("Slack workspace %s (%s) installed Switchboard", installation.team_id,
                 installation.team_name)

    async def async_save_bot(self, bot: Bot) -> None:
        raise NotImplementedError("bots are saved with their installation")

    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                      user_id: str | None = None,
                                      is_enterprise_install: bool | None = False
                                      ) -> Installation | None:
        found = await self.workspaces.find(team_id) if team_id else None
        return _installation(found) if found is not None else None

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        found = await self.async_find_installation(enterprise_id=enterprise_id,
                                                   team_id=team_id)
        return found.to_bot() if found is not None else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(self, *, enterprise_id: str | None,
                                        team_id: str | None, user_id: str | None = None
                                        ) -> None:
        if user_id is None:  # a user's own token is never kept: nothing to do for one
            await self.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        if team_id and await self.workspaces.remove(team_id):
            log.info("Slack workspace %s removed Switchboard: its installation is forgotten",
                     team_id)

    async def bot_token(self, team: str) -> str | None:
        found = await self.workspaces.find(team)
        token = found.get("bot_token") if found else None
        return str(token) if token else None


class StateStore(AsyncOAuthStateStore):
    """OAuth ``state`` values: issued by /slack/install, each good once, for ten minutes."""

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        return await self.workspaces.issue_state(STATE_TTL)

    async def async_consume(self, state: str) -> bool:
        ok = await self.workspaces.consume_state(state)
        if not ok:
            log.warning("an OAuth redirect came with an unknown, used or expired state: "
                        "refused")
        return ok
