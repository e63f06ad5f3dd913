"""Configuration: environment variables ``SWITCHBOARD_*`` over an optional TOML file.

Every key is declared once in ``KEYS`` (name, type, default, help); the README's
configuration reference is checked against that table by a test. Values are
validated when loaded, and every problem is reported at once, naming the key.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.metering import RateCard, RateCardError
from bot.model import Address, AddressError
from bot.permissions import Level, OutsideMail, PermissionRules, ThreadReplies, parse_levels
from bot.routes import Route, route_option

if TYPE_CHECKING:
    from bot.settings_mailboxes import MailboxSettings

ENV_PREFIX = "SWITCHBOARD_"
CONFIG_FILE_KEY = "SWITCHBOARD_CONFIG"
SLACK_API_URL = "https://slack.com/api/"
SLACK_AUTHORIZE_URL = "https://slack.com/oauth/v2/authorize"
DEFAULT_KEY_STORE = "~/.local/share/switchboard/matrix-keys"


class SettingsError(Exception):
    """The configuration cannot be used; ``problems`` lists each key and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class TlsMode(enum.StrEnum):
    AUTO = "auto"  # STARTTLS when the server offers it, plain otherwise
    STARTTLS = "starttls"  # STARTTLS required
    IMPLICIT = "implicit"  # TLS from the first byte (IMAPS 993, SMTPS 465)
    OFF = "off"  # never (loopback test servers only)


Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Key:
    name: str  # dotted: section.key; the env var is SWITCHBOARD_SECTION_KEY
    parse: Parser
    default: str | None
    help: str
    secret: bool = False  # also read from a file (``…_FILE``), never printed

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace(".", "_").upper()

    @property
    def env_file(self) -> str:
        return self.env + "_FILE"


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port (1-65535)")
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{value} must be a positive whole number")
    return value


def _pace(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 60:
        raise ValueError(f"{value} must be a number of seconds from 0 to 60")
    return value


def _url(*schemes: str) -> Parser:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"{text!r} is not a URL starting with {' or '.join(schemes)}://")
        return text

    return parse


def _email(text: str) -> str:
    try:
        return Address.email(text).value
    except AddressError as exc:
        raise ValueError(str(exc)) from exc


def _domain(text: str) -> str:
    try:
        return Address.email(f"x@{text}").value.partition("@")[2]
    except AddressError as exc:
        raise ValueError(f"{text!r} is not a domain name") from exc


def _matrix_user(text: str) -> str:
    try:
        return Address.matrix(text).value
    except AddressError as exc:
        raise ValueError(str(exc)) from exc


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), _port(port)


def _tls(text: str) -> TlsMode:
    try:
        return TlsMode(text.lower())
    except ValueError:
        raise ValueError(f"{text!r} is not one of {', '.join(m.value for m in TlsMode)}") from None


def _text(text: str) -> str:
    return text


def _mailboxes(text: str) -> tuple[str, ...]:
    boxes = tuple(b.strip() for b in text.split(",") if b.strip())
    if not boxes:
        raise ValueError("needs at least one mailbox name")
    return boxes


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not true or false")


def _routes(text: str) -> tuple[Route, ...]:
    routes = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        item, _, options = item.partition(";")
        chosen: dict[str, object] = {}
        for option in (o.strip() for o in options.split(";") if o.strip()):
            name, _, value = option.partition("=")
            chosen.update(route_option(name, value))
        address, sep, target = item.partition("=")
        network, _, room = target.strip().partition(":")
        if not sep or network not in ("slack", "matrix") or not room:
            raise ValueError(f"{item!r} is not address=slack:CHANNEL_ID or "
                             "address=matrix:!ROOM_ID:server")
        routes.append(Route(_email(address), *_place(f"{network}:{room}"),
                            **chosen))  # type: ignore[arg-type]
    return tuple(routes)


def _place(text: str) -> tuple[str, str]:
    """``slack:CHANNEL`` or ``matrix:!room`` as (network, room)."""
    network, _, room = text.strip().partition(":")
    if network == "slack" and re.fullmatch(r"([TE][A-Z0-9]{2,}/)?[CG][A-Z0-9]{2,}", room):
        return network, room
    if network == "slack":
        raise ValueError(f"{room!r} is not a Slack channel id (like C0123ABCD, or "
                         "T0123/C0456 to name the workspace)")
    # Room ids are opaque (room version 12 dropped the ":server" part); aliases are not.
    if network == "matrix" and re.fullmatch(r"![^\s=;,]+|#[^:\s]+:[^\s;,]+", room):
        return network, room
    if network == "matrix":
        raise ValueError(f"{room!r} is not a Matrix room id (!id) or alias (#name:server)")
    raise ValueError(f"{text!r} is not slack:CHANNEL_ID or matrix:!ROOM_ID")


def _teams(text: str) -> tuple[str, ...]:
    teams = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    for team in teams:
        if not re.fullmatch(r"[TE][A-Z0-9]{2,}", team):
            raise ValueError(f"{team!r} is not a Slack team id (like T0123ABCD)")
    return teams


def _mechanism(text: str) -> str:
    mechanism = text.strip().lower()
    if mechanism not in ("xoauth2", "oauthbearer"):
        raise ValueError(f"{text!r} is not xoauth2 or oauthbearer")
    return mechanism


def _thread_replies(text: str) -> ThreadReplies:
    try:
        return ThreadReplies(text.lower())
    except ValueError:
        raise ValueError(f"{text!r} is not internal or email") from None


def _outside_mail(text: str) -> OutsideMail:
    try:
        return OutsideMail(text.lower())
    except ValueError:
        raise ValueError(f"{text!r} is not verified, users or admins") from None


def _domains(text: str) -> tuple[str, ...]:
    return tuple(_domain(d.strip()) for d in text.split(",") if d.strip())


def _extensions(text: str) -> tuple[str, ...]:
    found = tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())
    if any(not e[1:].isalnum() for e in found):
        raise ValueError(f"{text!r} is not a list of file extensions like .exe,.bat")
    return found


def _rate(text: str) -> tuple[int, int]:
    count, sep, seconds = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not count/seconds, like 120/3600")
    return _positive_int(count), _positive_int(seconds)


def _sender_auth(text: str) -> str:
    if text not in ("check", "off"):
        raise ValueError(f"{text!r} is not check or off")
    return text


def _hosts(text: str) -> tuple[str, ...]:
    found = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    if any(not re.fullmatch(r"[a-z0-9.-]+", h) for h in found):
        raise ValueError(f"{text!r} is not a comma-separated list of host names")
    return found


def _endpoints(text: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        host, _, port = item.rpartition(":")
        if not host or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", host):
            raise ValueError(f"{item!r} is not host:port")
        found.append((host.strip("[]"), _port(port)))
    return tuple(found)


def _rate_card(text: str) -> RateCard:
    try:
        return RateCard.load(text)
    except RateCardError as exc:
        raise ValueError(str(exc)) from None


def _presence_policy(text: str) -> str:
    if text not in ("available", "away"):
        raise ValueError(f"{text!r} is not available or away")
    return text


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise ValueError(f"{text!r} is not a readable file")
    return text


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"{text!r} is not text or json")
    return text


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{text!r} is not DEBUG, INFO, WARNING or ERROR")
    return level


KEYS: tuple[Key, ...] = (
    Key("redis_url", _url("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0",
        "Redis holding all state and the RQ queues (`rediss://` for TLS).", secret=True),
    Key("redis_prefix", _text, "sb", "Prefix of every Redis key Switchboard writes."),
    Key("redis_sentinels", _endpoints, "",
        "Redis Sentinel: the sentinels, `host:port,host:port,…`. Set, the primary is the one "
        "they name for `redis_sentinel_master` (found again after a failover) and "
        "`redis_url` gives only the password, database and TLS (`rediss://`)."),
    Key("redis_sentinel_master", _text, "switchboard",
        "The Sentinel service name of Switchboard's Redis."),
    Key("redis_sentinel_password", _text, None,
        "The sentinels' own password (their `requirepass`), when they have one.",
        secret=True),
    Key("imap.host", _text, None, "IMAP server to watch; unset disables IMAP ingest."),
    Key("imap.port", _port, None, "IMAP port (default 993 with `implicit` TLS, else 143)."),
    Key("imap.user", _text, None, "IMAP login (required with `imap.host`)."),
    Key("imap.password", _text, None,
        "IMAP password (required with `imap.host`, unless `oauth2.token_url` is set).",
 secret=True),
    Key("imap.tls", _tls, "auto", "IMAP TLS: `auto`, `starttls`, `implicit` or `off`."),
    Key("imap.mailboxes", _mailboxes, "INBOX", "Comma-separated mailboxes to watch."),
    Key("smtp.host", _text, None, "SMTP submission server for outgoing mail."),
    Key("smtp.port", _port, None, "SMTP port (default 465 with `implicit` TLS, else 587)."),
    Key("smtp.user", _text, None, "SMTP login; unset sends without authentication."),
    Key("smtp.password", _text, None, "SMTP password (required with `smtp.user`).", secret=True),
    Key("smtp.tls", _tls, "auto", "SMTP TLS: `auto`, `starttls`, `implicit` or `off`."),
    Key("oauth2.token_url", _url("http", "https"), None,
        "OAuth2 token endpoint: IMAP and SMTP log in with an access token from it (SASL "
        "XOAUTH2 or OAUTHBEARER) instead of a password; Microsoft 365 and Google need this."),
    Key("oauth2.client_id", _text, None, "OAuth2 client (application) id."),
    Key("oauth2.client_secret", _text, None, "OAuth2 client secret.", secret=True),
    Key("oauth2.refresh_token", _text, None,
        "OAuth2 refresh token of the mailbox (the `refresh_token` grant); unset: the "
        "`client_credentials` grant (app-only access, e.g. Microsoft 365).", secret=True),
    Key("oauth2.scope", _text, "", "Scopes asked for, space-separated (e.g. "
        "`https://outlook.office365.com/.default`, or `https://mail.google.com/`)."),
    Key("oauth2.mechanism", _mechanism, "xoauth2",
        "SASL mechanism: `xoauth2` (Microsoft, Google) or `oauthbearer` (RFC 7628)."),
    Key("bot_email", _email, None, "Switchboard's own From address."),
    Key("reply_domain", _domain, None,
        "Domain of reply addresses (`reply+TOKEN@domain`); defaults to the bot_email domain."),
    Key("slack.bot_token", _text, None,
        "Slack bot token (`xoxb-…`) of the one workspace this deployment serves; unset (and "
        "no `slack.client_id`) disables Slack.", secret=True),
    Key("slack.signing_secret", _text, None,
        "Slack signing secret, checks every HTTP request from Slack (required unless "
        "`slack.app_token` is set: Socket Mode needs no public endpoint).", secret=True),
    Key("slack.app_token", _text, None,
        "App-level token (`xapp-…`, scope `connections:write`): Slack's events and actions "
        "arrive over Socket Mode instead of the HTTP endpoint.", secret=True),
    Key("slack.ping_interval", _positive_int, "10",
        "Seconds between Socket Mode pings; a socket that stops answering is reopened."),
    Key("slack.post_interval", _pace, "1.0",
        "Seconds between posts into one Slack channel, kept by every process together "
        "(Slack allows about one a second, with short bursts); 0 turns the pacing off "
        "(only for a Slack without its limits, such as a benchmark's)."),
    Key("slack.client_id", _text, None,
        "The Slack app's client id: workspaces install it through `/slack/install` (OAuth), "
        "each with its own bot token; instead of `slack.bot_token`."),
    Key("slack.client_secret", _text, None,
        "The Slack app's client secret (required with `slack.client_id`).", secret=True),
    Key("slack.install_teams", _teams, "",
        "Workspaces (team ids, comma-separated) allowed to install the app through "
        "`/slack/install`; empty: any workspace whose admin approves it."),
    Key("slack.authorize_url", _url("http", "https"), SLACK_AUTHORIZE_URL,
        "Where `/slack/install` sends the admin to approve the app (Slack's OAuth page)."),
    Key("slack.api_url", _url("http", "https"), SLACK_API_URL,
        "Slack Web API base URL (tests point it at the local Slack server)."),
    Key("matrix.homeserver", _url("http", "https"), None,
        "Matrix homeserver base URL; unset disables Matrix."),
    Key("matrix.user", _matrix_user, None, "The bot's Matrix user id (`@switchboard:server`)."),
    Key("matrix.password", _text, None, "The bot's Matrix password (not needed with "
        "`matrix.registration`).", secret=True),
    Key("matrix.registration", _text, "",
        "Run as an application service: the registration file "
        "(`switchboard matrix registration --url URL` writes it; the homeserver loads it "
        "too). Each email sender then posts as a Matrix user of their own, and the "
        "homeserver's rate limits do not hold the bot back. Encrypted rooms need the bot "
        "account (the homeserver gives an application service no keys: see the README)."),
    Key("matrix.key_store", _text, DEFAULT_KEY_STORE,
        "Folder of the bot's end-to-end encryption keys (its one device's, a SQLite file): "
        "keep it, and back it up; lost keys cannot be recovered."),
    Key("matrix.encryption", _bool, "true",
        "Read and write end-to-end encrypted rooms and DMs (`false`: plaintext rooms only)."),
    Key("matrix.encrypted_dms", _bool, "true",
        "Direct chats the bot opens are end-to-end encrypted (with `matrix.encryption`)."),
    Key("routes", _routes, "",
        "Shared mailboxes: `addr=slack:CHANNEL,addr2=matrix:!room:server` (comma-separated), "
        "each with options after `;`: `replies=email|internal`, `attachments=post|names|hold`, "
        "`senders=any|verified`, `name=Display name`, `autoreply=Text` (no commas). The "
        "address may be a catch-all, `*@domain`; plus-addresses (`support+billing@`) go by "
        "their base. Read-only from chat, where admins add "
        "more (`route add`)."),
    Key("receive_domains", _domains, "",
        "Domains whose mail reaches Switchboard (comma-separated; subdomains included): "
        "routes added from chat must use one. Default: the domains of `bot_email`, "
        "`reply_domain` and the configured routes."),
    Key("review_room", _place, None,
        "Where mail to an address with no route is offered to admins (`slack:CHANNEL` or "
        "`matrix:!room`): its admins may post it there or discard it; unset: such mail is "
        "refused and listed by `switchboard pending`."),
    Key("max_attachment_bytes", _positive_int, "20000000",
        "Attachments larger than this are not posted (the post says so)."),
    Key("max_attachments", _positive_int, "20",
        "At most this many attachments of one email are posted; the rest are listed."),
    Key("blocked_attachments", _extensions, ".exe,.bat,.cmd,.com,.scr,.js,.vbs,.msi,.ps1,.jar,.lnk",
        "File types never posted (comma-separated extensions); the post says so."),
    Key("ingest_concurrency", _positive_int, "32",
        "Emails of different conversations bridged at the same time; the emails of one "
        "conversation always go one after the other, in mailbox order."),
    Key("sender_rate", _rate, "120/3600",
        "Emails bridged per sender per window (`count/seconds`); more are refused."),
    Key("conversation_rate", _rate, "60/3600",
        "Emails bridged into one conversation per window (`count/seconds`); more are refused."),
    Key("sender_auth", _sender_auth, "check",
        "`check`: DKIM/SPF/DMARC decide whether a From address may act as its chat identity; "
        "`off` believes every From (only for a mailbox no outsider can write to)."),
    Key("auth.trusted_hosts", _hosts, "",
        "Mail servers whose `Authentication-Results` (by authserv-id) and `Received` headers "
        "are believed (comma-separated), normally the server that receives your mail."),
    Key("dns_server", _listen, None,
        "DNS server (`host:port`) for DKIM, SPF and DMARC look-ups; unset uses the system's."),
    Key("smtp_listen", _listen, None,
        "Address for Switchboard's own SMTP listener (`host:port`); unset disables it."),
    Key("smtp_listen_max_bytes", _positive_int, "30000000",
        "Largest message the SMTP listener accepts."),
    Key("permissions", parse_levels, None,
        "Who may use the bot: `who=level` pairs (level `none`, `user` or `admin`; who is a "
        "Matrix user or homeserver, a Slack `TEAM/USER` or `TEAM`, `matrix`, `slack` or `*`; "
        "the most specific wins). Default: the bot's own homeserver and the Slack workspace "
        "the app is installed in are users, everyone else none."),
    Key("outside_mail", _outside_mail, "verified",
        "Who may start email to addresses outside `org_domains`: `verified` (users whose "
        "chat account is linked to a verified email address), `users` or `admins`. "
        "Answering an email its sender wrote is always allowed."),
    Key("org_domains", _domains, "",
        "The organisation's mail domains (comma-separated; subdomains included); default: "
        "the domains of `bot_email` and `reply_domain`."),
    Key("mail_rate.user", _rate, "30/3600",
        "Emails one chat user may send per window (`count/seconds`)."),
    Key("mail_rate.org", _rate, "300/3600",
        "Emails one organisation (Slack workspace, Matrix homeserver) may send per window."),
    Key("bounce_rate", _rate, "3/3600",
        "Bounces (\"not delivered\" notes) sent to one address per window; more are not sent."),
    Key("plain_thread_replies", _thread_replies, "internal",
        "A plain message in an email's Slack or Matrix thread: `internal` (stays in chat; "
        "`email <text>` answers by email) or `email` (sent to the email's sender). Per "
        "route: `addr=matrix:!room;replies=email`, or `route set <addr> replies=email`."),
    Key("retry.interval", _positive_int, "60",
        "Seconds between presence checks of a queued delivery."),
    Key("retry.deadline", _positive_int, "86400",
        "Seconds a queued delivery waits for its recipient before the replier is asked again."),
    Key("presence_unknown", _presence_policy, "available",
        "How to treat a person whose network does not report presence: `available` or `away`."),
    Key("history.retention_days", _positive_int, None,
        "Days history is kept: older entries (bodies, attachment references, their "
        "indexes) are removed hourly, in bounded batches; unset: kept."),
    Key("autoreply_every", _positive_int, "86400",
        "Seconds between two automatic replies of one route to one sender (a route's "
        "`autoreply=` text; never to automatic mail, lists or unauthenticated senders)."),
    Key("reply_token_ttl", _positive_int, "2592000",
        "Seconds a reply address (`reply+TOKEN@…`) stays valid (default 30 days)."),
    Key("http.listen", _listen, "127.0.0.1:8080",
        "Address of Switchboard's HTTP server (Slack endpoints, health, reports)."),
    Key("public_url", _url("http", "https"), None,
        "How customers reach the HTTP server (report pages' links); default `http://` + "
        "`http.listen`."),
    Key("rate_card", _rate_card, None,
        "TOML file with every price (see Metering); unset: usage is recorded, not charged. "
        "A missing or negative price stops the start."),
    Key("meter_memory", _bool, "false",
        "Measure each transaction's memory with tracemalloc (slower); otherwise the payload "
        "bytes it held are counted."),
    Key("workers.min", _positive_int, "1", "Fewest RQ workers `switchboard worker` runs."),
    Key("workers.max", _positive_int, "4", "Most RQ workers `switchboard worker` runs."),
    Key("workers.jobs_per_worker", _positive_int, "20",
        "Waiting jobs per worker before the pool grows."),
    Key("workers.scale_interval", _positive_int, "5",
        "Seconds between the pool's looks at the queue."),
    Key("log_level", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Key("require_tls", _bool, "false",
        "Refuse plain links: `auto` TLS modes then demand STARTTLS, `off` is refused, and "
        "http://, redis:// links are refused unless they stay on this machine (loopback)."),
    Key("tls_ca_file", _existing_file, None,
        "PEM file of certificate authorities to trust for IMAP, SMTP, Redis and HTTPS links "
        "(default: the system's)."),
    Key("log_format", _log_format, "text", "`text`, or `json` for one JSON object per line."),
)

KEYS_BY_NAME = {key.name: key for key in KEYS}


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    user: str
    password: str
    tls: TlsMode
    mailboxes: tuple[str, ...]


@dataclass(frozen=True)
class OAuth2Settings:
    token_url: str
    client_id: str
    client_secret: str | None
    refresh_token: str | None
    scope: str
    mechanism: str  # "xoauth2" or "oauthbearer"

    @property
    def grant(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str | None
    password: str | None
    tls: TlsMode


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str | None  # None: workspaces install the app (OAuth), each its own token
    signing_secret: str | None  # None only in Socket Mode
    api_url: str
    app_token: str | None = None  # set: Socket Mode
    client_id: str | None = None  # set: OAuth installs, many workspaces
    client_secret: str | None = None
    authorize_url: str = SLACK_AUTHORIZE_URL
    ping_interval: int = 10
    install_teams: tuple[str, ...] = ()  # empty: any workspace may install
    post_interval: float = 1.0  # seconds between posts into one channel; 0: unpaced

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def installs(self) -> bool:
        """Whether workspaces install the app themselves (OAuth), rather than one pasted
        bot token."""
        return self.client_id is not None


@dataclass(frozen=True)
class MatrixSettings:
    homeserver: str
    user: str
    password: str
    key_store: str = ""  # the encryption keys' folder ("": encryption off)
    encrypted_dms: bool = True
    registration: str = ""  # the application service's registration file ("": a bot account)

    @property
    def appservice(self) -> bool:
        return bool(self.registration)


@dataclass(frozen=True)
class RedisTarget:
    url: str  # with sentinels: only its password, database and scheme count
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "switchboard"
    sentinel_password: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_prefix: str
    imap: ImapSettings | None
    smtp: SmtpSettings | None
    oauth2: OAuth2Settings | None
    bot_email: str | None
    reply_domain: str | None
    slack: SlackSettings | None
    matrix: MatrixSettings | None
    routes: tuple[Route, ...]
    receive_domains: tuple[str, ...]
    review_room: tuple[str, str] | None
    max_attachment_bytes: int
    max_attachments: int
    ingest_concurrency: int
    blocked_attachments: tuple[str, ...]
    sender_rate: tuple[int, int]
    conversation_rate: tuple[int, int]
    sender_auth: str
    auth_trusted_hosts: tuple[str, ...]
    dns_server: tuple[str, int] | None
    smtp_listen: tuple[str, int] | None
    smtp_listen_max_bytes: int
    retry_interval: int
    retry_deadline: int
    presence_unknown: str
    history_retention_days: int | None
    reply_token_ttl: int
    http_listen: tuple[str, int]
    public_url: str
    rate_card: RateCard | None
    meter_memory: bool
    workers: tuple[int, int, int, int]  # min, max, jobs per worker, scale interval
    log_level: str
    require_tls: bool
    tls_ca_file: str | None
    log_format: str
    permissions: PermissionRules
    bounce_rate: tuple[int, int]
    plain_thread_replies: ThreadReplies
    source: str  # where the values came from, for messages
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "switchboard"
    redis_sentinel_password: str | None = None
    # Every watched IMAP account: the environment form's (``imap``) first, then the
    # file's [[mailboxes]].
    mailboxes: tuple[MailboxSettings, ...] = ()
    autoreply_every: int = 86400

    @property
    def redis(self) -> RedisTarget:
        """Where the store is: a Redis, or the primary a Sentinel set names."""
        return RedisTarget(self.redis_url, self.redis_sentinels, self.redis_sentinel_master,
                           self.redis_sentinel_password, self.tls_ca_file)

    def nothing_to_run(self) -> str:
        """What `switchboard run` lacks to do anything at all (empty: enough is set): with
        neither a chat network nor a way for mail to come in, nothing would happen. One
        of them alone still serves (replies and commands in chat, or mail to DMs)."""
        lacking = []
        if self.slack is None and self.matrix is None:
            lacking.append("no chat network (set SWITCHBOARD_SLACK_BOT_TOKEN, or "
                           "SWITCHBOARD_SLACK_CLIENT_ID for installs, or "
                           "SWITCHBOARD_MATRIX_HOMESERVER and _USER)")
        if not self.mailboxes and self.smtp_listen is None:
            lacking.append("no way in for mail (set SWITCHBOARD_IMAP_HOST, or "
                           "SWITCHBOARD_SMTP_LISTEN)")
        return "; ".join(lacking) if len(lacking) == 2 else ""

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             config_file: str | Path | None = None) -> Settings:
        """Read and validate the configuration; raise SettingsError naming every problem."""
        env = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        problems: list[str] = []
        path = config_file or env.get(CONFIG_FILE_KEY)
        tables: list[object] = []
        if path:
            raw.update(_read_toml(Path(path), problems, tables))
        for key in KEYS:
            given = env.get(key.env, "") != ""
            if key.secret and env.get(key.env_file):
                if given:
                    problems.append(f"{key.env} and {key.env_file}: both are set; keep one")
                    continue
                secret = _read_secret(key.env_file, Path(env[key.env_file]), problems)
                if secret is not None:
                    raw[key.name] = secret
            elif given:
                raw[key.name] = env[key.env]
        known = {key.env for key in KEYS} | {key.env_file for key in KEYS if key.secret}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k != CONFIG_FILE_KEY
                         and k not in known)
        problems += [f"{k}: unknown setting (see the README's configuration reference)"
                     for k in unknown]
        mailboxes: tuple[MailboxSettings, ...] = ()
        if tables:
            from bot.settings_mailboxes import mailbox_tables

            mailboxes, routed = mailbox_tables(tables[0], Path(str(path)), problems)
            if routed:
                raw["routes"] = ",".join(r for r in (raw.get("routes", ""), *routed) if r)
        values = _parse_all(raw, problems)
        settings = _assemble(values, problems, source=f"{path or 'environment'}",
                             mailboxes=mailboxes)
        if problems or settings is None:
            raise SettingsError(problems)
        return settings


def _read_secret(where: str, path: Path, problems: list[str]) -> str | None:
    """A secret from a file (a Docker or Kubernetes secret): its text, without the
    line end an editor adds."""
    try:
        text = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: cannot read {path}: {getattr(exc, 'strerror', exc)}")
        return None
    if not text:
        problems.append(f"{where}: {path} is empty")
        return None
    return text


def _read_toml(path: Path, problems: list[str], tables: list[object]) -> dict[str, str]:
    """The file's keys as the environment gives them; its ``[[mailboxes]]`` go to
    ``tables`` (they are read whole, by bot.settings_mailboxes)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        problems.append(f"{CONFIG_FILE_KEY}: cannot read {path}: {exc.strerror}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{CONFIG_FILE_KEY}: {path} is not valid TOML: {exc}")
        return {}
    flat: dict[str, str] = {}
    if "mailboxes" in data:
        tables.append(data.pop("mailboxes"))
    for name, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    out: dict[str, str] = {}
    for name, value in flat.items():
        base = name.removesuffix("_file")
        if name != base and base in KEYS_BY_NAME and KEYS_BY_NAME[base].secret:
            if base in flat:
                problems.append(f"{path}: {base} and {name}: both are set; keep one")
            else:
                secret = _read_secret(f"{path}: {name}", Path(str(value)), problems)
                if secret is not None:
                    out[base] = secret
            continue
        if name not in KEYS_BY_NAME:
            problems.append(f"{path}: unknown key {name!r}")
        elif isinstance(value, list):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[name] = str(value).lower()
        else:
            out[name] = str(value)
    return out


def _parse_all(raw: dict[str, str], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in KEYS:
        text = raw.get(key.name, key.default)
        if text is None:
            values[key.name] = None
            continue
        try:
            values[key.name] = key.parse(text)
        except ValueError as exc:
            problems.append(f"{key.env}: {exc}")
            values[key.name] = None
    return values


def _require(values: dict[str, Any], problems: list[str], when: str, *names: str) -> bool:
    missing = [KEYS_BY_NAME[n].env for n in names if values.get(n) is None]
    for env in missing:
        problems.append(f"{env}: required when {KEYS_BY_NAME[when].env} is set")
    return not missing


def _default_port(tls: TlsMode, implicit: int, plain: int) -> int:
    return implicit if tls is TlsMode.IMPLICIT else plain


def _slack(v: dict[str, Any], problems: list[str]) -> SlackSettings | None:
    token, client = v["slack.bot_token"], v["slack.client_id"]
    if token is None and client is None:
        for name in ("slack.app_token", "slack.client_secret"):
            if v[name] is not None:
                problems.append(f"{KEYS_BY_NAME[name].env}: set, but Slack needs "
                                f"{KEYS_BY_NAME['slack.bot_token'].env} (one workspace) or "
                                f"{KEYS_BY_NAME['slack.client_id'].env} (installs)")
        return None
    if token is not None and client is not None:
        problems.append(f"{KEYS_BY_NAME['slack.bot_token'].env} and "
                        f"{KEYS_BY_NAME['slack.client_id'].env}: choose one: a pasted bot token "
                        "serves one workspace, a client id lets workspaces install the app")
        return None
    app_token = v["slack.app_token"]
    if app_token is not None and not app_token.startswith("xapp-"):
        problems.append(f"{KEYS_BY_NAME['slack.app_token'].env}: an app-level token starts "
                        "with xapp- (Basic Information > App-Level Tokens)")
    if token is not None and not token.startswith("xoxb-"):
        problems.append(f"{KEYS_BY_NAME['slack.bot_token'].env}: a bot token starts with xoxb- "
                        "(OAuth & Permissions > Bot User OAuth Token)")
    ok = True
    if app_token is None:
        ok = _require(v, problems, "slack.bot_token" if token else "slack.client_id",
                      "slack.signing_secret")
    if client is not None:
        ok = _require(v, problems, "slack.client_id", "slack.client_secret") and ok
    if not ok:
        return None
    return SlackSettings(token, v["slack.signing_secret"], v["slack.api_url"], app_token,
                         client, v["slack.client_secret"], v["slack.authorize_url"],
                         v["slack.ping_interval"], v["slack.install_teams"],
                         v["slack.post_interval"])


def _assemble(v: dict[str, Any], problems: list[str], source: str,
              mailboxes: tuple[MailboxSettings, ...] = ()) -> Settings | None:
    imap = smtp = slack = matrix = None
    oauth2 = None
    if v["oauth2.token_url"] and _require(v, problems, "oauth2.token_url", "oauth2.client_id"):
        oauth2 = OAuth2Settings(v["oauth2.token_url"], v["oauth2.client_id"],
                                v["oauth2.client_secret"], v["oauth2.refresh_token"],
                                v["oauth2.scope"], v["oauth2.mechanism"])
        if oauth2.grant == "client_credentials" and not oauth2.client_secret:
            problems.append(f"{KEYS_BY_NAME['oauth2.client_secret'].env}: required for the "
                            "client_credentials grant (or set "
                            f"{KEYS_BY_NAME['oauth2.refresh_token'].env})")
    login = ("imap.user",) if oauth2 else ("imap.user", "imap.password")
    if v["imap.host"] and _require(v, problems, "imap.host", *login):
        port = v["imap.port"] or _default_port(v["imap.tls"], 993, 143)
        imap = ImapSettings(v["imap.host"], port, v["imap.user"], v["imap.password"] or "",
                            v["imap.tls"], v["imap.mailboxes"])
    if imap is not None:
        from bot.settings_mailboxes import MailboxSettings

        # Its address is not assumed: mail for many addresses may land in one account.
        mailboxes = (MailboxSettings(imap.user, imap, oauth2), *mailboxes)
    if len({m.name for m in mailboxes}) < len(mailboxes):
        problems.append(f"{KEYS_BY_NAME['imap.user'].env}: a [[mailboxes]] table has the "
                        "same name; name it otherwise")
    if v["smtp.user"] and v["smtp.password"] is None and oauth2 is None:
        problems.append(f"{KEYS_BY_NAME['smtp.password'].env}: required when "
                        f"{KEYS_BY_NAME['smtp.user'].env} is set")
    if v["smtp.host"]:
        port = v["smtp.port"] or _default_port(v["smtp.tls"], 465, 587)
        smtp = SmtpSettings(v["smtp.host"], port, v["smtp.user"], v["smtp.password"], v["smtp.tls"])
        _require(v, problems, "smtp.host", "bot_email")
    slack = _slack(v, problems)
    registration = v["matrix.registration"]
    if v["matrix.homeserver"] and _require(v, problems, "matrix.homeserver", "matrix.user",
                                           *(() if registration else ("matrix.password",))):
        matrix = MatrixSettings(v["matrix.homeserver"].rstrip("/"), v["matrix.user"],
                                v["matrix.password"] or "",
                                str(Path(v["matrix.key_store"]).expanduser())
                                if v["matrix.encryption"] and not registration else "",
                                v["matrix.encrypted_dms"] and v["matrix.encryption"]
                                and not registration,
                                str(Path(registration).expanduser()) if registration else "")
    for route in v["routes"] or ():
        enabled = {"slack": slack, "matrix": matrix}[route.network]
        if enabled is None and not problems:
            problems.append(f"{KEYS_BY_NAME['routes'].env}: {route.address} goes to "
                            f"{route.network.title()}, which is not configured")
    if v["review_room"] and {"slack": slack, "matrix": matrix}[v["review_room"][0]] is None \
            and not problems:
        problems.append(f"{KEYS_BY_NAME['review_room'].env}: {v['review_room'][0].title()} "
                        "is not configured")
    if v["require_tls"]:
        for name in ("imap.tls", "smtp.tls"):
            if v[name] is TlsMode.OFF and v[name.split(".")[0] + ".host"]:
                problems.append(f"{KEYS_BY_NAME[name].env}: is off but "
                                f"{KEYS_BY_NAME['require_tls'].env} is true; "
                                "use auto, starttls or implicit")
        for name, scheme in (("redis_url", "redis"), ("matrix.homeserver", "http"),
                             ("slack.api_url", "http"), ("oauth2.token_url", "http")):
            url = v.get(name)
            if url and urlsplit(url).scheme == scheme and not _loopback(url):
                problems.append(f"{KEYS_BY_NAME[name].env}: {url} is a plain link but "
                                f"{KEYS_BY_NAME['require_tls'].env} is true; use "
                                f"{scheme}s://")
    low, high = v.get("workers.min"), v.get("workers.max")
    if low is not None and high is not None and low > high:
        problems.append(f"{KEYS_BY_NAME['workers.min'].env}: {low} is more than "
                        f"{KEYS_BY_NAME['workers.max'].env} ({high})")
    reply_domain = v["reply_domain"]
    if reply_domain is None and v["bot_email"]:
        reply_domain = v["bot_email"].partition("@")[2]
    if problems:
        return None
    levels = v["permissions"]
    if levels is None:
        levels = {"slack": Level.USER}
        if matrix is not None:
            levels[matrix.user.partition(":")[2]] = Level.USER
    org_domains = v["org_domains"] or tuple(
        d for d in (v["bot_email"] and v["bot_email"].partition("@")[2], reply_domain) if d)
    receive_domains = v["receive_domains"] or tuple(dict.fromkeys(
        [*org_domains, *(r.address.partition("@")[2] for r in v["routes"] or ())]))
    rules = PermissionRules(levels=levels, org_domains=frozenset(org_domains),
                            outside_mail=v["outside_mail"], user_mail_rate=v["mail_rate.user"],
                            org_mail_rate=v["mail_rate.org"])
    return Settings(
        redis_url=v["redis_url"], redis_prefix=v["redis_prefix"], imap=imap, smtp=smtp,
        oauth2=oauth2,
        bot_email=v["bot_email"], reply_domain=reply_domain, slack=slack, matrix=matrix,
        routes=v["routes"], receive_domains=receive_domains, review_room=v["review_room"],
        max_attachment_bytes=v["max_attachment_bytes"],
        max_attachments=v["max_attachments"], ingest_concurrency=v["ingest_concurrency"],
        blocked_attachments=v["blocked_attachments"],
        sender_rate=v["sender_rate"], conversation_rate=v["conversation_rate"],
        sender_auth=v["sender_auth"], auth_trusted_hosts=v["auth.trusted_hosts"],
        dns_server=v["dns_server"],
        smtp_listen=v["smtp_listen"], smtp_listen_max_bytes=v["smtp_listen_max_bytes"],
        retry_interval=v["retry.interval"], retry_deadline=v["retry.deadline"],
        presence_unknown=v["presence_unknown"], reply_token_ttl=v["reply_token_ttl"],
        history_retention_days=v["history.retention_days"],
        http_listen=v["http.listen"],
        public_url=v["public_url"] or "http://{}:{}".format(*v["http.listen"]),
        rate_card=v["rate_card"], meter_memory=v["meter_memory"],
        workers=(v["workers.min"], v["workers.max"], v["workers.jobs_per_worker"],
                 v["workers.scale_interval"]),
        log_level=v["log_level"], require_tls=v["require_tls"],
        tls_ca_file=v["tls_ca_file"], log_format=v["log_format"], permissions=rules,
        bounce_rate=v["bounce_rate"], plain_thread_replies=v["plain_thread_replies"],
        source=source, redis_sentinels=v["redis_sentinels"] or (),
        redis_sentinel_master=v["redis_sentinel_master"],
        redis_sentinel_password=v["redis_sentinel_password"], mailboxes=mailboxes,
        autoreply_every=v["autoreply_every"],
    )
