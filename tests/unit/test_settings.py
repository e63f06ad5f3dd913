"""Settings: environment over TOML, validation naming every problem, README coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import KEYS, SLACK_API_URL, Settings, SettingsError, TlsMode

ROOT = Path(__file__).resolve().parents[2]

FULL = {
    "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:16379/0",
    "SWITCHBOARD_IMAP_HOST": "imap.example.com",
    "SWITCHBOARD_IMAP_USER": "bot@example.com",
    "SWITCHBOARD_IMAP_PASSWORD": "pw",
    "SWITCHBOARD_IMAP_TLS": "implicit",
    "SWITCHBOARD_SMTP_HOST": "smtp.example.com",
    "SWITCHBOARD_BOT_EMAIL": "Switchboard <Bot@Example.com>",
    "SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1",
    "SWITCHBOARD_SLACK_SIGNING_SECRET": "s",
    "SWITCHBOARD_MATRIX_HOMESERVER": "https://matrix.example.com/",
    "SWITCHBOARD_MATRIX_USER": "@bot:example.com",
    "SWITCHBOARD_MATRIX_PASSWORD": "pw",
}


def test_a_full_configuration_loads_with_defaults() -> None:
    s = Settings.load(FULL)
    assert s.imap is not None and s.imap.port == 993 and s.imap.tls is TlsMode.IMPLICIT
    assert s.imap.mailboxes == ("INBOX",)
    assert s.smtp is not None and s.smtp.port == 587 and s.smtp.tls is TlsMode.AUTO
    assert s.bot_email == "bot@example.com"
    assert s.reply_domain == "example.com"
    assert s.slack is not None and s.slack.api_url == SLACK_API_URL
    assert s.matrix is not None and s.matrix.homeserver == "https://matrix.example.com"
    assert s.http_listen == ("127.0.0.1", 8080)


def test_networks_are_optional() -> None:
    s = Settings.load({})
    assert (s.imap, s.smtp, s.slack, s.matrix) == (None, None, None, None)
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_every_problem_is_reported_by_key() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.load({"SWITCHBOARD_IMAP_HOST": "imap.example.com",
                       "SWITCHBOARD_IMAP_PORT": "99999",
                       "SWITCHBOARD_REDIS_URL": "http://wrong",
                       "SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1",
                       "SWITCHBOARD_MATRIX_USER": "bot",
                       "SWITCHBOARD_SMTP_TLS": "sometimes",
                       "SWITCHBOARD_TYPO": "1"})
    text = str(error.value)
    for expected in ("SWITCHBOARD_IMAP_PORT: 99999 is not a TCP port",
                     "SWITCHBOARD_REDIS_URL: 'http://wrong' is not a URL",
                     "SWITCHBOARD_IMAP_USER: required when SWITCHBOARD_IMAP_HOST is set",
                     "SWITCHBOARD_SLACK_SIGNING_SECRET: required",
                     "SWITCHBOARD_MATRIX_USER: 'bot' is not a Matrix user id",
                     "SWITCHBOARD_SMTP_TLS: 'sometimes' is not one of",
                     "SWITCHBOARD_TYPO: unknown setting"):
        assert expected in text


def test_require_tls_refuses_plain_links() -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_IMAP_TLS: is off"):
        Settings.load({**FULL, "SWITCHBOARD_IMAP_TLS": "off", "SWITCHBOARD_REQUIRE_TLS": "yes"})
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_REDIS_URL: redis://10\.1\.2\.3:6379/0 "
                                            r"is a plain link"):
        Settings.load({**FULL, "SWITCHBOARD_REDIS_URL": "redis://10.1.2.3:6379/0",
                       "SWITCHBOARD_REQUIRE_TLS": "yes"})
    # a link that stays on this machine is not refused
    assert Settings.load({**FULL, "SWITCHBOARD_REQUIRE_TLS": "yes"}).require_tls


def test_toml_file_with_environment_overrides(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('redis_url = "redis://10.0.0.1:6379/1"\nbot_email = "bot@example.com"\n'
                      '[imap]\nhost = "imap.example.com"\nuser = "u"\npassword = "p"\n'
                      'port = 1143\nmailboxes = ["INBOX", "Support"]\n')
    s = Settings.load({"SWITCHBOARD_CONFIG": str(config),
                       "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:6379/2"})
    assert s.redis_url == "redis://127.0.0.1:6379/2"
    assert s.imap is not None and s.imap.port == 1143
    assert s.imap.mailboxes == ("INBOX", "Support")


def test_bad_toml_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("redis_url = \n[imap\n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        Settings.load({}, config_file=config)
    config.write_text('[imap]\nhots = "x"\n')
    with pytest.raises(SettingsError, match=r"unknown key 'imap\.hots'"):
        Settings.load({}, config_file=config)
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.load({}, config_file=tmp_path / "missing.toml")


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [key.env for key in KEYS if f"`{key.env}`" not in readme]
    assert not missing, f"README's configuration reference lacks {missing}"


def test_slack_modes_one_workspace_or_installs_over_http_or_socket_mode() -> None:
    base = {k: v for k, v in FULL.items() if not k.startswith("SWITCHBOARD_SLACK_")}
    socket = Settings.load({**base, "SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1",
                            "SWITCHBOARD_SLACK_APP_TOKEN": "xapp-1-A1-1-x"}).slack
    assert socket is not None and socket.socket_mode and not socket.installs
    assert socket.signing_secret is None  # no HTTP endpoint, nothing to verify
    installs = Settings.load({**base, "SWITCHBOARD_SLACK_CLIENT_ID": "1.2",
                              "SWITCHBOARD_SLACK_CLIENT_SECRET": "c",
                              "SWITCHBOARD_SLACK_SIGNING_SECRET": "s"}).slack
    assert installs is not None and installs.installs and installs.bot_token is None
    routed = Settings.load({**base, "SWITCHBOARD_SLACK_CLIENT_ID": "1.2",
                            "SWITCHBOARD_SLACK_CLIENT_SECRET": "c",
                            "SWITCHBOARD_SLACK_APP_TOKEN": "xapp-1",
                            "SWITCHBOARD_ROUTES": "help@example.com=slack:T0ONE/C0HELP"})
    assert routed.routes[0].room == "T0ONE/C0HELP"


def test_slack_settings_that_cannot_work_are_refused_with_the_reason() -> None:
    base = {k: v for k, v in FULL.items() if not k.startswith("SWITCHBOARD_SLACK_")}
    cases = {
        "choose one": {"SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1", "SWITCHBOARD_SLACK_CLIENT_ID": "1",
                       "SWITCHBOARD_SLACK_CLIENT_SECRET": "c",
                       "SWITCHBOARD_SLACK_SIGNING_SECRET": "s"},
        "starts with xapp-": {"SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1",
                              "SWITCHBOARD_SLACK_APP_TOKEN": "xoxb-2"},
        "SWITCHBOARD_SLACK_CLIENT_SECRET: required": {"SWITCHBOARD_SLACK_CLIENT_ID": "1",
                                                      "SWITCHBOARD_SLACK_APP_TOKEN": "xapp-1"},
        "SWITCHBOARD_SLACK_SIGNING_SECRET: required": {"SWITCHBOARD_SLACK_BOT_TOKEN": "xoxb-1"},
        "needs SWITCHBOARD_SLACK_BOT_TOKEN": {"SWITCHBOARD_SLACK_APP_TOKEN": "xapp-1"},
    }
    for expected, env in cases.items():
        with pytest.raises(SettingsError, match=expected):
            Settings.load({**base, **env})


def test_run_with_nothing_configured_says_what_to_set() -> None:
    from bot.settings import Settings

    lacking = Settings.load({}).nothing_to_run()
    assert "no chat network" in lacking and "no way in for mail" in lacking
    assert "SWITCHBOARD_SMTP_LISTEN" in lacking
    assert Settings.load({"SWITCHBOARD_SMTP_LISTEN": "127.0.0.1:2525",
                          "SWITCHBOARD_MATRIX_HOMESERVER": "https://hs.example",
                          "SWITCHBOARD_MATRIX_USER": "@sb:hs.example",
                          "SWITCHBOARD_MATRIX_PASSWORD": "pw"}).nothing_to_run() == ""


def test_a_warning_said_again_and_again_is_said_once_then_counted() -> None:
    import logging

    from bot.logs import Repeats

    repeats = Repeats(window=60.0)

    def said(message: str, at: float) -> logging.LogRecord | None:
        record = logging.LogRecord("storage", logging.WARNING, __file__, 1, message, (), None)
        record.created = at
        return record if repeats.filter(record) else None

    assert said("Redis is down", 0.0) is not None
    assert [said("Redis is down", float(t)) for t in range(1, 60)] == [None] * 59
    assert said("another warning", 30.0) is not None
    again = said("Redis is down", 61.0)
    assert again is not None and again.getMessage() == (
        "Redis is down (and 59 more times in the last 60 s)")


def test_redis_through_sentinel(tmp_path: Path) -> None:
    secret = tmp_path / "sentinel_password"
    secret.write_text("s3cret\n")
    s = Settings.load(FULL | {"SWITCHBOARD_REDIS_URL": "rediss://:pw@ignored/2",
                              "SWITCHBOARD_REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380",
                              "SWITCHBOARD_REDIS_SENTINEL_MASTER": "mail",
                              "SWITCHBOARD_REDIS_SENTINEL_PASSWORD_FILE": str(secret)})
    target = s.redis
    assert target.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert target.master == "mail" and target.sentinel_password == "s3cret"
    assert target.url == "rediss://:pw@ignored/2"
    assert Settings.load(FULL).redis.sentinels == ()
    with pytest.raises(SettingsError) as raised:
        Settings.load(FULL | {"SWITCHBOARD_REDIS_SENTINELS": "10.0.0.1,host:notaport"})
    assert "SWITCHBOARD_REDIS_SENTINELS" in str(raised.value)


def test_several_mailboxes_each_with_its_own_login_folders_and_route(tmp_path: Path) -> None:
    secret = tmp_path / "desk-refresh"
    secret.write_text("rt-desk\n")
    config = tmp_path / "switchboard.toml"
    config.write_text(f'''
bot_email = "bot@example.com"
[slack]
bot_token = "xoxb-1"
signing_secret = "s"
[[mailboxes]]
name = "Support desk"
host = "imap.example.com"
user = "support@example.com"
password = "pw"
tls = "implicit"
folders = ["INBOX", "Escalations"]
route = "slack:C0SUPPORT;replies=email"
[[mailboxes]]
host = "outlook.office365.com"
user = "billing@example.com"
tls = "implicit"
route = "slack:C0BILLING"
[mailboxes.oauth2]
token_url = "https://login.example.com/token"
client_id = "app"
refresh_token_file = "{secret}"
''')
    s = Settings.load({**FULL, "SWITCHBOARD_CONFIG": str(config)})
    env_form, desk, billing = s.mailboxes
    # The environment form is one mailbox of them, with the password and no address.
    assert env_form.imap == s.imap and env_form.name == "bot@example.com"
    assert env_form.address is None and not env_form.table
    assert desk.name == "Support desk" and desk.imap.port == 993 and desk.oauth2 is None
    assert desk.imap.mailboxes == ("INBOX", "Escalations") and desk.login == "password"
    assert desk.address == "support@example.com"
    assert billing.name == "billing@example.com" and billing.own_login
    assert billing.oauth2 is not None and billing.oauth2.refresh_token == "rt-desk"
    assert billing.login == "OAuth2 (refresh_token grant)"
    # Their routes are routes like the others, named after the mailbox.
    by_address = {r.address: r for r in s.routes}
    assert by_address["support@example.com"].room == "C0SUPPORT"
    assert by_address["support@example.com"].name == "Support desk"
    assert by_address["support@example.com"].replies is not None
    assert by_address["billing@example.com"].room == "C0BILLING"


def test_a_bad_mailbox_table_is_named_with_what_to_fix(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text('''
[[mailboxes]]
host = "imap.example.com"
user = "a@example.com"
pasword = "pw"
[[mailboxes]]
name = "b"
user = "b@example.com"
password = "pw"
port = 70000
route = "slack:nowhere"
[[mailboxes]]
name = "b"
host = "imap.example.com"
user = "c@example.com"
[mailboxes.oauth2]
client_id = "app"
''')
    with pytest.raises(SettingsError) as raised:
        Settings.load({"SWITCHBOARD_CONFIG": str(config)})
    text = str(raised.value)
    assert "mailboxes #1: unknown key 'pasword'" in text
    assert "mailboxes #1: password is required" in text
    assert "mailboxes #2: port: 70000 is not a TCP port" in text
    assert "mailboxes #2: host is required" in text
    assert "mailboxes #3 oauth2: token_url is required" in text
