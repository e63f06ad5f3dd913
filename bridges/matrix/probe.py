"""Matrix's contribution to `switchboard doctor`: the homeserver answers and the bot logs in."""

from __future__ import annotations

import aiohttp
from nio import AsyncClient, LoginError, WhoamiError

from bot.doctor import Check
from bot.settings import MatrixSettings, Settings
from bridges.errors import MatrixError
from bridges.matrix.ghosts import ping
from bridges.matrix.registration import Registration


async def _server_version(homeserver: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{homeserver}/_matrix/client/versions") as r:
            r.raise_for_status()
            spec = (await r.json()).get("versions", [])
        # Synapse names itself here; other homeservers may not answer, which is fine.
        async with http.get(f"{homeserver}/_synapse/admin/v1/server_version") as r:
            if r.status == 200:
                return f"Synapse {(await r.json()).get('server_version', '?')}"
    return f"Matrix spec {spec[-1]}" if spec else "Matrix homeserver"


async def probe_matrix(settings: Settings) -> list[Check]:
    cfg = settings.matrix
    if cfg is None:
        return [Check.warn("matrix", "not configured: Matrix is off",
                           "set SWITCHBOARD_MATRIX_HOMESERVER, _USER and _PASSWORD")]
    try:
        version = await _server_version(cfg.homeserver)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return [Check.fail("matrix", f"cannot reach {cfg.homeserver}: {exc}",
                           "start the homeserver or correct SWITCHBOARD_MATRIX_HOMESERVER")]
    if cfg.appservice:
        return await probe_appservice(cfg, version)
    client = AsyncClient(cfg.homeserver, cfg.user)
    try:
        login = await client.login(cfg.password, device_name="switchboard doctor")
        if isinstance(login, LoginError):
            return [Check.fail("matrix", f"{cfg.homeserver} refused the login of {cfg.user}: "
                                         f"{login.message}",
                               "check SWITCHBOARD_MATRIX_USER and SWITCHBOARD_MATRIX_PASSWORD")]
        presence = await presence_enabled(client)
        limits = await rate_limit_check(cfg.homeserver, client.access_token, cfg.user)
        await client.logout()
    finally:
        await client.close()
    checks = [Check.ok("matrix", f"{version} at {cfg.homeserver}, logged in as {cfg.user}",
                       version.split()[-1])]
    if limits is not None:
        checks.append(limits)
    return checks + _presence(presence)


def _presence(enabled: bool) -> list[Check]:
    return [] if enabled else [Check.warn(
        "matrix", "the homeserver does not report presence: everyone counts as "
                  "SWITCHBOARD_PRESENCE_UNKNOWN says",
        "enable presence in the homeserver (Synapse: presence.enabled: true)")]


async def probe_appservice(cfg: MatrixSettings, version: str) -> list[Check]:
    """Application-service mode: the registration reads, the homeserver loaded it (it
    knows the ``as_token``), it reaches Switchboard (ping), and it does not rate-limit."""
    try:
        registration = Registration.load(cfg.registration, cfg.user.split(":", 1)[1])
    except MatrixError as exc:
        return [Check.fail("matrix", str(exc), "write it with `switchboard matrix "
                           "registration --url URL` and give it to the homeserver")]
    client = AsyncClient(cfg.homeserver, cfg.user)
    client.access_token = registration.as_token
    try:
        who = await client.whoami()
        if isinstance(who, WhoamiError):
            return [Check.fail("matrix", f"{cfg.homeserver} does not know the application "
                               f"service's token ({who.message}): it has not loaded "
                               f"{cfg.registration}",
                               "add the file to the homeserver's app_service_config_files "
                               "(Synapse) and restart the homeserver")]
        if who.user_id != cfg.user:
            return [Check.fail("matrix", f"the registration is for {who.user_id}, not "
                               f"SWITCHBOARD_MATRIX_USER {cfg.user}",
                               "set SWITCHBOARD_MATRIX_USER to the registration's "
                               "sender_localpart on this homeserver")]
        checks = [Check.ok("matrix", f"{version} at {cfg.homeserver}: Switchboard is its "
                           f"application service {registration.id!r}, the bot {cfg.user}",
                           version.split()[-1])]
        try:
            took = await ping(client, registration)
            checks.append(Check.ok("matrix", f"the homeserver reaches Switchboard at "
                                   f"{registration.url} ({took:.0f} ms)"))
        except MatrixError as exc:
            checks.append(Check.warn("matrix", str(exc),
                                     "start `switchboard run` where the registration's url "
                                     "points (SWITCHBOARD_HTTP_LISTEN), or correct the url "
                                     "and give the homeserver the file again"))
        if registration.rate_limited:
            checks.append(Check.warn("matrix", "the registration leaves the application "
                                     "service under the homeserver's rate limits "
                                     "(rate_limited is not false)",
                                     "set rate_limited: false in the registration and "
                                     "restart the homeserver"))
        else:
            checks.append(Check.ok("matrix", "the application service and its email senders "
                                   "are exempt from the homeserver's rate limits"))
        presence = await presence_enabled(client)
    finally:
        await client.close()
    return checks + _presence(presence)


async def presence_enabled(client: AsyncClient) -> bool:
    """Synapse with presence switched off answers every query with "offline": set the
    bot online and read it back."""
    await client.set_presence("online")
    answer = await client.get_presence(client.user_id)
    return getattr(answer, "presence", "") == "online"


EXEMPT_FIX = ("exempt the bot from the homeserver's message rate limit (Synapse's admin API: "
              "POST /_synapse/admin/v1/users/{user}/override_ratelimit with "
              '{{"messages_per_second": 0, "burst_count": 0}}, as a server admin), or run '
              "Switchboard as an application service, which is not rate-limited")


async def rate_limit_check(homeserver: str, token: str, user: str) -> Check | None:
    """Whether the bot posts at the homeserver's ordinary pace (Synapse: 0.2 messages a
    second after a burst of 10), read from Synapse's admin API; None where the homeserver
    is not Synapse."""
    url = f"{homeserver}/_synapse/admin/v1/users/{user}/override_ratelimit"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
        status = answer.status
        body = await answer.json(content_type=None) if status == 200 else {}
    fix = EXEMPT_FIX.format(user=user)
    if status == 404 and not body:
        return None  # no such admin API: not Synapse, or behind a proxy that hides it
    if status in (401, 403):
        return Check.warn("matrix", f"cannot tell whether {user} is exempt from the "
                          "homeserver's rate limits (the admin API needs a server admin); "
                          "an ordinary account posts about one message every 5 s after a "
                          "burst of 10", fix)
    if status == 200 and isinstance(body, dict) and body.get("messages_per_second") == 0 \
            and body.get("burst_count") == 0:
        return Check.ok("matrix", f"{user} is exempt from the homeserver's message rate "
                        "limit")
    return Check.warn("matrix", f"{user} posts under the homeserver's message rate limit "
                      "(Synapse's default: 0.2 a second after a burst of 10): a burst of "
                      "mail into a room waits minutes", fix)
