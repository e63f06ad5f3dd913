"""Power in Matrix rooms by room version: creators in version 12, levels before it."""

from __future__ import annotations

from bridges.matrix.room_versions import RoomPower, room_version

ALICE, BOB, CAROL = "@alice:hs", "@bob:hs", "@carol:hs"


def create(version: str, **content: object) -> dict[str, object]:
    return {"type": "m.room.create", "sender": ALICE,
            "content": {"room_version": version, **content}}


def test_version_12_creators_outrank_every_level_and_are_not_listed() -> None:
    power = RoomPower.read(create("12", additional_creators=[BOB]),
                           {"users": {CAROL: 50}, "users_default": 0})
    assert power.at_least(ALICE, 100) and power.at_least(BOB, 50)
    assert power.at_least(CAROL, 50) and not power.at_least(CAROL, 51)
    assert not power.at_least("@dave:hs", 50)


def test_before_version_12_the_creator_has_the_level_power_levels_give() -> None:
    demoted = RoomPower.read(create("10", additional_creators=[BOB]),
                             {"users": {ALICE: 0, CAROL: 100}})
    assert not demoted.at_least(ALICE, 50) and not demoted.at_least(BOB, 50)
    assert demoted.at_least(CAROL, 50)
    fresh = RoomPower.read(create("10"), None)  # no power levels yet: the creator has 100
    assert fresh.at_least(ALICE, 100) and not fresh.at_least(BOB, 1)


def test_versions_are_looked_up_and_newer_stable_ones_keep_version_12s_rule() -> None:
    assert room_version("11").creators_privileged is False
    assert room_version("org.matrix.hydra.11").creators_privileged is True
    assert room_version("13").creators_privileged is True
    assert room_version("org.example.custom").creators_privileged is False
    assert RoomPower.read({"content": {"creator": ALICE}}, None).at_least(ALICE, 100)
