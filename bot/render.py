"""Every outgoing text is a jinja2 template in ``templates/``; this module renders them.

HTML templates are autoescaped. Slack's mrkdwn has its own escaping (``&``, ``<``,
``>``), applied by the ``mrkdwn`` filter, so an email cannot smuggle ``<!channel>``
or a disguised link into Slack.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bot.text import human_size

SOURCE_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def template_folder() -> Path:
    """The templates: the package ``bot.templates`` of an installed wheel, else the
    checkout's ``templates/`` folder (which that package is built from)."""
    try:
        shipped = resources.files("bot.templates")
    except ModuleNotFoundError:
        shipped = None
    if isinstance(shipped, Path) and (shipped / "chat").is_dir():
        return shipped
    if SOURCE_TEMPLATES.is_dir():
        return SOURCE_TEMPLATES
    raise RuntimeError(f"Switchboard's templates are missing (neither the package "
                       f"bot.templates nor {SOURCE_TEMPLATES}): reinstall it")


def mrkdwn(text: object) -> str:
    """Escape text for Slack's mrkdwn: control sequences like <!channel> become inert."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def no_mentions(text: object) -> str:
    """Matrix: keep @room from notifying a whole room (a zero-width joiner breaks it)."""
    return str(text).replace("@room", "@\u200droom")


def _datetime(timestamp: float) -> str:
    return time.strftime("%a %d %b %Y %H:%M UTC", time.gmtime(timestamp))


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(template_folder()), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "html.j2"]),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                      # Templates do not change while Switchboard runs: no file check
                      # (a stat) on every render.
                      auto_reload=False)
    env.filters["mrkdwn"] = mrkdwn
    env.filters["no_mentions"] = no_mentions
    env.globals["size"] = human_size
    env.filters["datetime"] = _datetime
    return env


def render(template: str, /, **context: Any) -> str:
    return environment().get_template(template).render(**context).strip()
