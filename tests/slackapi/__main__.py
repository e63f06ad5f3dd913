"""Run the local Slack server on its own: ``python -m tests.slackapi --port 18080``."""

from __future__ import annotations

import argparse
import asyncio
import signal

from tests.slackapi.server import SlackServer, SlackState, Workspace


async def serve(port: int, token: str | None) -> None:
    workspace = Workspace(bot_token=token) if token else Workspace()
    server = SlackServer(SlackState(workspace))
    url = await server.start(port)
    app = server.credentials
    print(f"local Slack Web API at {url}/api/ (bot token {workspace.bot_token})\n"
          f"app {app.app_id}: app-level token {app.app_token}, client id {app.client_id}, "
          f"client secret {app.client_secret}\n"
          f"OAuth approval page {url}/oauth/v2/authorize", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--token", help="the bot token the server accepts")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.token))


if __name__ == "__main__":
    main()
