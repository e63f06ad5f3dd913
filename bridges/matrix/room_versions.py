"""What differs between Matrix room versions, as far as Switchboard reads rooms: one flag
per rule on one ``RoomVersion``, looked up by the room's ``m.room.create``.

Room version 12 (MSC4289, Synapse's default since 1.135) gives the room's creators (the
sender of ``m.room.create`` and its ``additional_creators``) unlimited power; they are
not listed in ``m.room.power_levels``. In older versions the creator is a member like
any other, with the level ``m.room.power_levels`` gives (100 when the room has none)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CREATOR_WITHOUT_POWER_LEVELS = 100  # every version: a room with no power levels yet


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    creators_privileged: bool  # creators outrank every power level (MSC4289)


_OLDER = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11",
          "org.matrix.msc3757.10", "org.matrix.msc3757.11")
KNOWN = {v: RoomVersion(v, False) for v in _OLDER} | {
    v: RoomVersion(v, True) for v in ("12", "org.matrix.hydra.11")}


def room_version(identifier: str) -> RoomVersion:
    """The rules of ``identifier``; a stable version newer than the ones known keeps
    version 12's rule (later versions build on it), an unknown unstable one the old rule."""
    found = KNOWN.get(identifier)
    if found is not None:
        return found
    return RoomVersion(identifier, identifier.isdigit() and int(identifier) >= 12)


@dataclass(frozen=True)
class RoomPower:
    """Who may do what in one room: power levels, and the creators where they count."""

    version: RoomVersion
    levels: dict[str, int]
    default: int
    creators: frozenset[str]
    has_power_levels: bool = True

    @classmethod
    def read(cls, create: dict[str, Any], power_levels: dict[str, Any] | None) -> RoomPower:
        """From the ``m.room.create`` event (whole: its sender counts) and the content of
        ``m.room.power_levels`` (None: the room has none)."""
        content = create.get("content") or {}
        version = room_version(str(content.get("room_version") or "1"))
        creators = {str(create.get("sender") or content.get("creator") or "")}
        if version.creators_privileged:
            extra = content.get("additional_creators")
            creators |= {str(u) for u in extra if isinstance(u, str)} \
                if isinstance(extra, list) else set()
        creators.discard("")
        levels: dict[str, int] = {}
        default = 0
        if power_levels is not None:
            users = power_levels.get("users") or {}
            levels = {str(u): int(v) for u, v in users.items()
                      if isinstance(v, int) and not isinstance(v, bool)}
            found = power_levels.get("users_default", 0)
            default = found if isinstance(found, int) and not isinstance(found, bool) else 0
        return cls(version, levels, default, frozenset(creators), power_levels is not None)

    def at_least(self, user: str, level: int) -> bool:
        if user in self.creators and (self.version.creators_privileged
                                      or not self.has_power_levels):
            return self.version.creators_privileged or level <= CREATOR_WITHOUT_POWER_LEVELS
        return self.levels.get(user, self.default) >= level
