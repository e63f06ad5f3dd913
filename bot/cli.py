"""The `switchboard` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.settings import Settings, SettingsError


def _load(args: argparse.Namespace) -> Settings:
    try:
        return Settings.load(config_file=args.config)
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot import doctor
    from bot.app import doctor_probes

    settings = _load(args)
    checks = asyncio.run(doctor.run_checks(settings, doctor_probes()))
    print(doctor.as_json(checks) if args.json else doctor.as_text(checks, args.verbose))
    return 1 if doctor.failed(checks) else 0


def cmd_not_yet(what: str) -> int:
    print(f"switchboard: '{what}' is not available in this version yet; "
          "see the README for what works today.", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Answer email from chat and chat from email.")
    parser.add_argument("--config", help="a TOML settings file (or set SWITCHBOARD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check the installation and every configured service")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--verbose", action="store_true", help="list every package check")
    sub.add_parser("run", help="serve: Slack endpoints, Matrix sync and mail ingest")
    sub.add_parser("worker", help="run the background job workers")
    sub.add_parser("demo", help="send a sample email through the local services")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    if args.command == "doctor":
        return cmd_doctor(args)
    return cmd_not_yet(args.command)


if __name__ == "__main__":
    sys.exit(main())
