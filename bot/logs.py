"""Logging: plain text for people, or one JSON object per line for machines.

Flows tag what they log with the conversation and delivery they work on (context
variables, so every line inside the work carries them). Message bodies and secrets
are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

conversation_var: contextvars.ContextVar[str] = contextvars.ContextVar("conversation",
                                                                       default="")
delivery_var: contextvars.ContextVar[str] = contextvars.ContextVar("delivery", default="")

# Libraries that log what they send and receive (message text, tokens) at DEBUG, or are
# chatty at INFO: never below WARNING, whatever the level asked for, so that no email
# body or secret reaches the logs through them.
QUIET = ("aioimaplib", "nio", "aiohttp", "mail.log", "rq.worker", "slack_bolt", "slack_sdk",
         "aiosmtplib", "aiosmtpd", "urllib3", "asyncio", "redis", "dkim", "spf", "peewee",
         "markdown")


@contextmanager
def log_context(conversation: str = "", delivery: str = "") -> Iterator[None]:
    tokens = []
    if conversation:
        tokens.append((conversation_var, conversation_var.set(conversation)))
    if delivery:
        tokens.append((delivery_var, delivery_var.set(delivery)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if conversation_var.get():
            entry["conversation"] = conversation_var.get()
        if delivery_var.get():
            entry["delivery"] = delivery_var.get()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{k}={v}" for k, v in (("conversation", conversation_var.get()),
                                                ("delivery", delivery_var.get())) if v)
        return f"{text} [{ids}]" if ids else text


class Repeats(logging.Filter):
    """A warning said again and again (a store that stays down, a homeserver that stays
    away) is said once, then counted: at most one line per message per ``window``
    seconds, the next one saying how many were held back."""

    KEPT = 1000  # distinct messages remembered

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # -> [said at, held]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        seen = self._seen.get(key)
        if seen is not None and record.created - seen[0] < self.window:
            seen[1] += 1
            return False
        held = int(seen[1]) if seen is not None else 0
        self._seen[key] = [record.created, 0]
        if len(self._seen) > self.KEPT:
            del self._seen[next(iter(self._seen))]
        if held:
            record.msg = (f"{record.getMessage()} (and {held} more time"
                          f"{'s' if held > 1 else ''} in the last {self.window:.0f} s)")
            record.args = ()
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    handler.addFilter(_no_library_debug)
    handler.addFilter(Repeats())


def _no_library_debug(record: logging.LogRecord) -> bool:
    """Drop DEBUG records of the quiet libraries even if one resets its own level."""
    return record.levelno > logging.DEBUG or record.name.split(".")[0] not in QUIET
