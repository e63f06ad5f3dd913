"""Several mailboxes: the ``[[mailboxes]]`` tables of the TOML file.

Each table is one IMAP account with its own server, login (a password, or an OAuth2
grant of its own in ``[mailboxes.oauth2]``), folders and route. Its keys are the
``imap.*`` and ``oauth2.*`` keys without their section, read by the same parsers, so a
value means the same in a table as in the environment form (``SWITCHBOARD_IMAP_*``,
which stays the way to give one mailbox)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.routes import display_name
from bot.settings import (
    KEYS_BY_NAME,
    ImapSettings,
    OAuth2Settings,
    _default_port,
    _email,
    _read_secret,
    _routes,
)

IMAP_KEYS = ("host", "port", "user", "password", "tls")
OAUTH2_KEYS = ("token_url", "client_id", "client_secret", "refresh_token", "scope",
               "mechanism")
TABLE_KEYS = (*IMAP_KEYS, "folders", "name", "address", "route")


@dataclass(frozen=True)
class MailboxSettings:
    """One watched IMAP account."""

    name: str  # how status, doctor and metrics call it
    imap: ImapSettings
    oauth2: OAuth2Settings | None = None  # None: the password logs in
    address: str | None = None  # the address its mail is for: mail with no route goes by it
    table: bool = False  # from a [[mailboxes]] table (not the environment form)

    @property
    def own_login(self) -> bool:
        """Whether its OAuth2 grant is its own (the environment form's SMTP shares it)."""
        return self.table and self.oauth2 is not None

    @property
    def login(self) -> str:
        return f"OAuth2 ({self.oauth2.grant} grant)" if self.oauth2 else "password"


def mailbox_tables(tables: object, path: Path, problems: list[str]
                   ) -> tuple[tuple[MailboxSettings, ...], tuple[str, ...]]:
    """The mailboxes the tables describe, and the routes their ``route`` keys give
    (``address=target;options``, as ``routes`` takes them)."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: mailboxes must be tables: [[mailboxes]]")
        return (), ()
    found: list[MailboxSettings] = []
    routes: list[str] = []
    for number, table in enumerate(tables, 1):
        where = f"{path}: mailboxes #{number}"
        mailbox, route = _table(table, where, problems)
        if mailbox is None:
            continue
        if any(m.name == mailbox.name for m in found):
            problems.append(f"{where}: another mailbox is called {mailbox.name!r}; give each "
                            "its own name")
            continue
        found.append(mailbox)
        if route:
            routes.append(route)
    return tuple(found), tuple(routes)


def _table(table: Mapping[str, Any], where: str, problems: list[str]
           ) -> tuple[MailboxSettings | None, str]:
    before = len(problems)
    values = _values(table, where, problems, "imap", (*TABLE_KEYS, "oauth2"))
    grant = table.get("oauth2")
    oauth2 = None
    if grant is not None:
        if not isinstance(grant, dict):
            problems.append(f"{where}: oauth2 must be a table: [mailboxes.oauth2]")
        else:
            oauth2 = _oauth2(_values(grant, f"{where} oauth2", problems, "oauth2", OAUTH2_KEYS),
                             f"{where} oauth2", problems)
    for needed in ("host", "user") if oauth2 else ("host", "user", "password"):
        if values.get(needed) is None:
            problems.append(f"{where}: {needed} is required"
                            + (" (or an [mailboxes.oauth2] grant)" if needed == "password"
                               else ""))
    address = values.get("address")
    if address is None and "@" in str(values.get("user") or ""):
        try:
            address = _email(str(values["user"]))
        except ValueError:
            address = None
    route = values.get("route")
    if route is not None and address is None:
        problems.append(f"{where}: route needs the mailbox's address (address = \"…\")")
    if len(problems) > before:
        return None, ""
    tls = values.get("tls") or KEYS_BY_NAME["imap.tls"].parse("auto")
    imap = ImapSettings(values["host"], values.get("port") or _default_port(tls, 993, 143),
                        values["user"], values.get("password") or "", tls,
                        values.get("folders") or ("INBOX",))
    name = values.get("name") or imap.user
    # Its posts name it, unless the route names itself.
    routed = f"{address}={route}" + ("" if "name=" in route else f";name={name}") \
        if route else ""
    if routed:
        try:
            _routes(routed)
        except ValueError as exc:
            problems.append(f"{where}: route: {exc}")
            return None, ""
    return MailboxSettings(name, imap, oauth2, address, table=True), routed


def _values(table: Mapping[str, Any], where: str, problems: list[str], section: str,
            allowed: tuple[str, ...]) -> dict[str, Any]:
    """A table's values, each parsed as its ``section.key`` is (secrets also from a
    ``…_file``)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        base = key.removesuffix("_file")
        if key != base and KEYS_BY_NAME.get(f"{section}.{base}", None) is not None \
                and KEYS_BY_NAME[f"{section}.{base}"].secret:
            if base in table:
                problems.append(f"{where}: {base} and {key}: both are set; keep one")
                continue
            secret = _read_secret(f"{where}: {key}", Path(str(value)), problems)
            if secret is not None:
                out[base] = secret
            continue
        if key not in allowed:
            problems.append(f"{where}: unknown key {key!r} (a mailbox has "
                            f"{', '.join(allowed)})")
            continue
        if key == "oauth2":
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        try:
            out[key] = _parse(section, key, text)
        except ValueError as exc:
            problems.append(f"{where}: {key}: {exc}")
    return out


def _parse(section: str, key: str, text: str) -> Any:
    if key == "folders":
        return KEYS_BY_NAME["imap.mailboxes"].parse(text)
    if key == "name":
        return display_name(text)
    if key == "address":
        return _email(text)
    if key == "route":
        return text.strip()
    return KEYS_BY_NAME[f"{section}.{key}"].parse(text)


def _oauth2(values: dict[str, Any], where: str, problems: list[str]) -> OAuth2Settings | None:
    for needed in ("token_url", "client_id"):
        if values.get(needed) is None:
            problems.append(f"{where}: {needed} is required")
    if problems and any(p.startswith(where) for p in problems):
        return None
    grant = OAuth2Settings(values["token_url"], values["client_id"],
                           values.get("client_secret"), values.get("refresh_token"),
                           values.get("scope") or "",
                           values.get("mechanism") or "xoauth2")
    if grant.grant == "client_credentials" and not grant.client_secret:
        problems.append(f"{where}: client_secret is required for the client_credentials "
                        "grant (or set refresh_token)")
        return None
    return grant
