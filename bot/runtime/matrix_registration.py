"""`switchboard matrix registration`: the application service registration, written for
the homeserver to load and for Switchboard to read its tokens from."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bot.errors import BridgeError
from bridges.matrix.registration import Registration

DEFAULT_FILE = "switchboard-registration.yaml"


def add_registration_command(matrix_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    registration = matrix_sub.add_parser(
        "registration", help="write the application service registration (the homeserver "
                             "loads it; Switchboard reads it from "
                             "SWITCHBOARD_MATRIX_REGISTRATION)")
    registration.add_argument("--url", required=True,
                              help="where the homeserver reaches Switchboard's HTTP listener "
                                   "(SWITCHBOARD_HTTP_LISTEN), e.g. http://10.0.0.5:8080")
    registration.add_argument("--out", metavar="FILE",
                              default=os.environ.get("SWITCHBOARD_MATRIX_REGISTRATION")
                              or DEFAULT_FILE,
                              help="the file to write (default: SWITCHBOARD_MATRIX_REGISTRATION, "
                                   f"else {DEFAULT_FILE}); its tokens are kept when it exists")
    registration.add_argument("--user", default=os.environ.get("SWITCHBOARD_MATRIX_USER"),
                              help="the bot's user id (default: SWITCHBOARD_MATRIX_USER)")
    registration.add_argument("--new-tokens", action="store_true",
                              help="make new tokens even if the file has some (the homeserver "
                                   "must load the file again, and Switchboard restart)")


def cmd_registration(args: argparse.Namespace) -> int:
    if not args.user:
        print("switchboard: the bot's user id is needed: --user @switchboard:example.org, or "
              "SWITCHBOARD_MATRIX_USER", file=sys.stderr)
        return 2
    out = Path(args.out)
    server = str(args.user).partition(":")[2]
    try:
        kept = Registration.load(out, server) if out.exists() and not args.new_tokens \
            else None
        registration = Registration.new(args.url, args.user, kept=kept)
        registration.write(out)
    except (BridgeError, OSError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({'tokens kept' if kept else 'new tokens'}). Next:\n"
          f"  1. give it to the homeserver (Synapse: app_service_config_files: [{out.resolve()}])"
          " and restart it;\n"
          f"  2. set SWITCHBOARD_MATRIX_REGISTRATION={out.resolve()} for Switchboard (no "
          "password needed) and restart it;\n"
          "  3. `switchboard doctor` pings the homeserver through it.")
    return 0
