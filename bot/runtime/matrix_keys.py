"""The Matrix bot's encryption keys as an operator sees them: `switchboard doctor`'s check
(are the kept keys there?) and `switchboard matrix new-device` (start over, knowingly)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bot.doctor import Check
from bot.errors import StoreError
from bot.runtime.command import with_store
from bot.runtime.matrix_registration import cmd_registration
from bot.settings import Settings
from bridges.matrix.client import key_store_file
from storage.store import Store


async def probe_matrix_keys(settings: Settings) -> list[Check]:
    cfg = settings.matrix
    if cfg is None:
        return []
    if not cfg.key_store:
        return [Check.warn("matrix keys", "end-to-end encryption is off: encrypted rooms "
                                          "and DMs are not read",
                           "set SWITCHBOARD_MATRIX_ENCRYPTION=true")]
    folder = Path(cfg.key_store)
    store = Store.open(settings.redis, settings.redis_prefix)
    try:
        device = await store.matrix.keys_device(cfg.user)
    except StoreError as exc:
        return [Check.warn("matrix keys", f"cannot tell which device's keys to expect: {exc}",
                           "start Redis")]
    finally:
        await store.close()
    return _judge(folder, device, key_store_file(cfg.key_store, cfg.user, device)
                  if device else None)


def _judge(folder: Path, device: str | None, path: Path | None) -> list[Check]:
    """The check, from the folder and the file the kept device's keys should be in."""
    if device is None or path is None:
        usable = (folder.is_dir() and os.access(folder, os.W_OK)) or \
            (not folder.exists() and os.access(_existing_parent(folder), os.W_OK))
        if not usable:
            return [Check.fail("matrix keys", f"{folder} cannot be written",
                               "make SWITCHBOARD_MATRIX_KEY_STORE a folder Switchboard owns")]
        return [Check.ok("matrix keys", f"none made yet: the first start makes them in "
                                        f"{folder} (back that folder up)")]
    if not path.exists():
        return [Check.fail("matrix keys", f"the keys of the bot's device {device} are missing "
                                          f"({path})",
                           "restore that file from your backup of SWITCHBOARD_MATRIX_KEY_STORE, "
                           "or run `switchboard matrix new-device` to start over as a new "
                           "device")]
    return [Check.ok("matrix keys", f"device {device}, keys in {path}")]


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def cmd_matrix(args: argparse.Namespace) -> int:
    if args.matrix_command == "registration":
        return cmd_registration(args)
    return cmd_new_device(args)


def cmd_new_device(args: argparse.Namespace) -> int:
    """`switchboard matrix new-device`: forget the bot's device, so the next start logs in
    as a new one (with new keys). Never done on its own: it is the operator's choice."""

    async def work(settings: Settings, store: Store) -> list[str]:
        if settings.matrix is None:
            raise ValueError("Matrix is not configured (SWITCHBOARD_MATRIX_HOMESERVER)")
        user = settings.matrix.user
        device = await store.matrix.keys_device(user)
        session = await store.matrix.session(user)
        await store.matrix.forget_session(user)
        await store.matrix.save_keys_device(user, None)
        old = device or (session[0] if session else None)
        return [f"{user} will log in as a new device at the next start"
                + (f"; the old device {old} is no longer used (remove it from the account's "
                   "sessions, and its key file when you are sure)" if old else ""),
                "Encrypted rooms share their keys with the new device from then on; "
                "messages sent before stay unreadable to the bot."]

    return with_store(args, work)
