"""What every `switchboard` subcommand shares: loading the settings, and running work
against the store with errors a person can act on."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from bot import logs
from bot.errors import StoreError
from bot.reports import ReportError
from bot.settings import Settings, SettingsError
from storage.store import Store


def load_settings(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.load(config_file=args.config)
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    return settings


def with_store(args: argparse.Namespace,
               work: Callable[[Settings, Store], Awaitable[list[str]]]) -> int:
    settings = load_settings(args)

    async def run() -> list[str]:
        store = Store.open(settings.redis, settings.redis_prefix)
        try:
            return await work(settings, store)
        finally:
            await store.close()

    try:
        print("\n".join(asyncio.run(run())))
    except (StoreError, ReportError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    return 0
