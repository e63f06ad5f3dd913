"""Matrix's contribution to `switchboard doctor`: the homeserver answers and the bot logs in."""

from __future__ import annotations

import aiohttp
from nio import AsyncClient, LoginError

from bot.doctor import Check
from bot.settings import Settings


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
    client = AsyncClient(cfg.homeserver, cfg.user)
    try:
        login = await client.login(cfg.password, device_name="switchboard doctor")
        if isinstance(login, LoginError):
            return [Check.fail("matrix", f"{cfg.homeserver} refused the login of {cfg.user}: "
                                         f"{login.message}",
                               "check SWITCHBOARD_MATRIX_USER and SWITCHBOARD_MATRIX_PASSWORD")]
        presence = await presence_enabled(client)
        await client.logout()
    finally:
        await client.close()
    checks = [Check.ok("matrix", f"{version} at {cfg.homeserver}, logged in as {cfg.user}",
                       version.split()[-1])]
    if not presence:
        checks.append(Check.warn(
            "matrix", "the homeserver does not report presence: everyone counts as "
                      "SWITCHBOARD_PRESENCE_UNKNOWN says",
            "enable presence in the homeserver (Synapse: presence.enabled: true)"))
    return checks


async def presence_enabled(client: AsyncClient) -> bool:
    """Synapse with presence switched off answers every query with "offline": set the
    bot online and read it back."""
    await client.set_presence("online")
    answer = await client.get_presence(client.user_id)
    return getattr(answer, "presence", "") == "online"
