"""The `switchboard` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence

from bot import DISTRIBUTION, __version__, logs
from bot.runtime.cli_billing import BILLING_COMMANDS, add_billing_commands
from bot.runtime.command import load_settings, with_store
from bot.runtime.matrix_keys import cmd_matrix
from bot.runtime.matrix_registration import add_registration_command
from bot.settings import Settings
from storage.store import Store


def cmd_doctor(args: argparse.Namespace) -> int:
    from bot import doctor
    from bot.runtime.app import doctor_probes

    settings = load_settings(args)
    checks = asyncio.run(doctor.run_checks(settings, doctor_probes()))
    print(doctor.as_json(checks) if args.json else doctor.as_text(checks, args.verbose))
    return 1 if doctor.failed(checks) else 0


def cmd_run(args: argparse.Namespace) -> int:
    from bot.errors import BridgeError, StoreError
    from bot.runtime.app import Runtime

    settings = load_settings(args)
    missing = settings.nothing_to_run()
    if missing:
        print(f"switchboard: nothing to run: {missing}. `switchboard init` writes a settings "
              "file with every key, explained.", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runtime = await Runtime.start(settings)
        try:
            await runtime.serve(stop)
        finally:
            await runtime.close()

    try:
        asyncio.run(main())
    except (BridgeError, StoreError) as exc:
        print(f"switchboard: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.errors import BridgeError, StoreError
    from bot.runtime.demo import DemoError, run_demo

    settings = load_settings(args)
    try:
        asyncio.run(run_demo(settings, args.invite, args.keep_running))
    except (DemoError, BridgeError, StoreError) as exc:
        print(f"switchboard demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """RQ workers (with RQ's scheduler) for delivery retries and charge reports.

    By default a pool: between SWITCHBOARD_WORKERS_MIN and _MAX worker processes, grown
    and shrunk with the queue's backlog, plus the sweep that re-makes the retry job of
    any queued delivery whose job was lost with a killed worker. ``--single`` is one
    worker in this process (a pool's member); ``--burst`` one that stops when the queue
    is empty (scripts, tests)."""
    import threading

    from bot.model import DeliveryState
    from storage.keys import Keys
    from storage.queue import RqWorkerPool
    from storage.store import Store

    settings = load_settings(args)
    pool = RqWorkerPool(settings.redis, Keys(settings.redis_prefix))
    from bot.runtime import jobs

    jobs.configure(args.config)
    if args.single:
        try:
            pool.work(name=args.name)
        finally:
            jobs.shutdown()
        return 0

    async def queued() -> list[tuple[str, int]]:
        store = Store.open(settings.redis, settings.redis_prefix)
        try:
            found = await store.deliveries.in_state(DeliveryState.QUEUED, 10_000)
            return [(d.id, len(d.changes)) for d in found]
        finally:
            await store.close()

    def sweep_forever() -> None:
        while True:
            try:
                remade = pool.sweep(asyncio.run(queued()))
                if remade:
                    logging.getLogger("switchboard.worker").info(
                        "re-made %d lost retry job(s)", remade)
            except Exception:
                logging.getLogger("switchboard.worker").exception("the sweep failed")
            time.sleep(max(1.0, settings.retry_interval / 2))

    threading.Thread(target=sweep_forever, name="sweep", daemon=True).start()
    if args.burst:
        try:
            pool.work(name=args.name, burst=True)
        finally:
            jobs.shutdown()
        return 0
    from bot.runtime.workers import run_pool

    return run_pool(settings, pool, args.config)


def cmd_pending(args: argparse.Namespace) -> int:
    """What did not go through: refused emails and undelivered messages."""
    from bot.model import DeliveryState

    async def report(settings: Settings, store: Store) -> list[str]:
        lines = []
        refusals = await store.ingest.refusals(args.limit)
        lines.append(f"Refused emails ({len(refusals)}):")
        for r in reversed(refusals):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.at))
            lines.append(f"  {when}  {r.source}  from {r.sender or '?'}  "
                         f"{r.subject!r}: {r.reason}")
        held = await store.held.waiting(limit=args.limit)
        lines.append(f"Held for admins ({len(held)}; they decide in chat, see `status`):")
        for h in held:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(h.at))
            lines.append(f"  {when}  {h.id}  {h.network}:{h.room}  from {h.sender or '?'}  "
                         f"{h.subject!r}: {h.reason}")
        for state in (DeliveryState.QUEUED, DeliveryState.FAILED):
            deliveries = await store.deliveries.in_state(state, args.limit)
            lines.append(f"{state.value.title()} deliveries ({len(deliveries)}):")
            for d in deliveries:
                note = d.changes[-1].note if d.changes else ""
                lines.append(f"  {d.id}  {d.sender} -> {d.recipient}  {note}")
        return lines

    return with_store(args, report)


def cmd_slack(args: argparse.Namespace) -> int:
    """`switchboard slack manifest`: needs no settings (it is how an app starts)."""
    from bridges.slack.manifest import ManifestError, manifest_yaml

    try:
        print(manifest_yaml(socket_mode=args.socket_mode, public_url=args.public_url,
                            name=args.name), end="")
    except ManifestError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """`switchboard forget ADDRESS`: erase a person (see bot/retention.py)."""
    from bot.errors import BridgeError
    from bot.model import Address, AddressError, Network
    from bot.retention import forget
    from bridges.matrix.ghosts import ERASED_NAME, erase_ghosts

    try:
        person = Address.parse(args.address)
    except AddressError as exc:
        print(f"switchboard forget: {exc}", file=sys.stderr)
        return 2

    async def work(settings: Settings, store: Store) -> list[str]:
        done = await forget(person, store.address_book, store.erasure, store.audit,
                            by="operator (switchboard forget)")
        e = done.erased
        said = [f"erased: {e.entries} history entries, {done.addresses} address-book "
                f"entries, {e.reply_tokens} reply tokens, {e.deliveries} unfinished "
                "deliveries; the audit trail records that an erasure was done (not whose "
                "data or what). Mail in the mailbox itself is the mail server's to delete."]
        if settings.matrix is not None and settings.matrix.appservice:
            try:
                renamed = await erase_ghosts(settings.matrix, [
                    a.value for a in done.people if a.network is Network.EMAIL])
            except BridgeError as exc:
                said.append(f"Matrix: the email sender's user keeps its name for now ({exc}):"
                            " run `switchboard forget` again when the homeserver answers.")
            else:
                said.append(f"Matrix: {renamed} email sender user(s) renamed to "
                            f"{ERASED_NAME!r} in every room (what they posted stays in the "
                            "rooms' history, as any chat message does).")
        return said

    return with_store(args, work)


def cmd_search(args: argparse.Namespace) -> int:
    """`switchboard search reindex`: the search index built again from history."""
    async def work(settings: Settings, store: Store) -> list[str]:
        count = await store.search.reindex()
        return [f"search index rebuilt: {count} history entries indexed"]

    return with_store(args, work)


def cmd_init(args: argparse.Namespace) -> int:
    """`switchboard init [PATH]`: a commented settings file with every key (needs none)."""
    from pathlib import Path

    from bot.settings_docs import example_toml

    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"switchboard init: {path} exists; keep it, or add --force to replace it",
              file=sys.stderr)
        return 2
    try:
        path.write_text(example_toml())
    except OSError as exc:
        print(f"switchboard init: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {path}: every setting, commented out at its default. Edit it, then "
          f"check it with: switchboard --config {path} doctor")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit trail: emails sent and actions refused, newest first."""

    async def read(settings: Settings, store: Store) -> list[str]:
        events = await store.audit.recent(args.limit)
        lines = [f"Audit trail ({len(events)} newest first):"]
        for e in events:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
            lines.append(f"  {when}  {e.action.value:<14}  {e.actor}  -> {e.target}: {e.detail}")
        return lines

    return with_store(args, read)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Answer email from chat and chat from email.")
    parser.add_argument("--config", help="a TOML settings file (or set SWITCHBOARD_CONFIG)")
    parser.add_argument("--version", action="version",
                        version=f"switchboard {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check the installation and every configured service")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--verbose", action="store_true", help="list every package check")
    sub.add_parser("run", help="serve: mail ingest (IMAP, SMTP listener), Matrix sync, HTTP")
    worker = sub.add_parser("worker", help="run the background job worker (delivery retries)")
    worker.add_argument("--name", default=None, help="the worker's name in RQ")
    worker.add_argument("--burst", action="store_true",
                        help="one worker that stops when the queue is empty (scripts, tests)")
    worker.add_argument("--single", action="store_true",
                        help="one worker in this process, no pool (a pool starts these)")
    pending = sub.add_parser("pending", help="list refused emails and undelivered messages")
    pending.add_argument("--limit", type=int, default=50, help="at most this many of each")
    audit = sub.add_parser("audit", help="list emails sent and actions refused (who, what, "
                                         "when), newest first")
    audit.add_argument("--limit", type=int, default=100, help="at most this many events")
    demo = sub.add_parser("demo", help="send a sample email through the local services and "
                                       "show it arriving in a Matrix room")
    demo.add_argument("--invite", default=None,
                      help="a Matrix user to invite to the demo room (e.g. @alice:server)")
    demo.add_argument("--keep-running", action="store_true",
                      help="keep Switchboard running after the sample email arrived")
    forget = sub.add_parser("forget", help="erase a person: history, address book, reply "
                                           "tokens, unfinished deliveries")
    forget.add_argument("address", help="an email address, a Slack TEAM/USER or a Matrix "
                                        "@user:server (all addresses linked to it go too)")
    matrix = sub.add_parser("matrix", help="the Matrix bot: its device, its application "
                                           "service registration")
    matrix_sub = matrix.add_subparsers(dest="matrix_command", required=True)
    matrix_sub.add_parser("new-device", help="forget the bot's device: the next start logs in "
                                             "as a new one, with new encryption keys")
    add_registration_command(matrix_sub)
    search = sub.add_parser("search", help="the search index")
    search_sub = search.add_subparsers(dest="search_command", required=True)
    search_sub.add_parser("reindex", help="build the index again from history (same answers)")
    init = sub.add_parser("init", help="write a commented settings file with every key")
    init.add_argument("path", nargs="?", default="switchboard.toml",
                      help="where to write it (default: switchboard.toml)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    slack = sub.add_parser("slack", help="the Slack app: print its manifest")
    slack_sub = slack.add_subparsers(dest="slack_command", required=True)
    manifest = slack_sub.add_parser(
        "manifest", help="print the Slack app manifest (YAML) to create the app from")
    manifest.add_argument("--socket-mode", action="store_true",
                          help="events over Socket Mode (no public URL needed)")
    manifest.add_argument("--public-url", metavar="URL",
                          help="Slack calls URL/slack/events over HTTPS; with --socket-mode, "
                               "only workspaces installing the app come to URL/slack/install")
    manifest.add_argument("--name", default="Switchboard", help="the app's and bot's name")
    add_billing_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    commands = {"doctor": cmd_doctor, "run": cmd_run, "demo": cmd_demo,
                "pending": cmd_pending, "audit": cmd_audit, "slack": cmd_slack,
                "init": cmd_init, "matrix": cmd_matrix, "forget": cmd_forget,
                "worker": cmd_worker, "search": cmd_search,
                **BILLING_COMMANDS}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
