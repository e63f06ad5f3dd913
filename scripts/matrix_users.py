"""Register the test homeserver's users (idempotent) and exempt the bot from rate limits.

Uses Synapse's shared-secret registration API and its admin API, as an operator would.
Standard library only: it runs before the project's own virtualenv exists.

usage: matrix_users.py HOMESERVER_URL SHARED_SECRET PASSWORD BOT_USER THROTTLED_BOT USER...

THROTTLED_BOT is a bot account left under the homeserver's rate limits (an admin, as the
bot must be for look-ups, but not exempted): what an operator who skipped the exemption has.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request
from typing import Any

ADMIN = "sb-admin"


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None,
         method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     method=method or ("GET" if data is None else "POST"))
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def register(base: str, secret: str, user: str, password: str, admin: bool) -> None:
    url = f"{base}/_synapse/admin/v1/register"
    nonce = call(url)["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    try:
        call(url, {"nonce": nonce, "username": user, "password": password,
                   "admin": admin, "mac": mac.hexdigest()})
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
        if answer.get("errcode") != "M_USER_IN_USE":
            raise SystemExit(f"registering {user} failed: {exc.code} {answer}") from exc


def login(base: str, user: str, password: str) -> tuple[str, str]:
    answer = call(f"{base}/_matrix/client/v3/login", {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
    return answer["access_token"], answer["user_id"]


def main(argv: list[str]) -> None:
    base, secret, password, bot, throttled, *users = argv
    register(base, secret, ADMIN, password, admin=True)
    # The bot is a server admin: Synapse's look-up of users by email is an admin API.
    register(base, secret, bot, password, admin=True)
    register(base, secret, throttled, password, admin=True)
    for user in users:
        register(base, secret, user, password, admin=False)
    token, admin_id = login(base, ADMIN, password)
    server_name = admin_id.split(":", 1)[1]
    bot_id = f"@{bot}:{server_name}"
    call(f"{base}/_synapse/admin/v2/users/{bot_id}", {"admin": True}, token, method="PUT")
    call(f"{base}/_synapse/admin/v1/users/{bot_id}/override_ratelimit",
         {"messages_per_second": 0, "burst_count": 0}, token)
    for user in users:
        # Each person's email as a third-party id, as a homeserver with email sign-up has.
        call(f"{base}/_synapse/admin/v2/users/@{user}:{server_name}",
             {"threepids": [{"medium": "email", "address": f"{user}@{server_name}"}]},
             token, method="PUT")


if __name__ == "__main__":
    main(sys.argv[1:])
