"""`switchboard demo`: one email, end to end, through the real local services.

It opens a Matrix room, routes the bot's own address to it, starts the IMAP ingest,
sends a sample email over SMTP and shows the post as it appears in the room.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from email.message import EmailMessage
from email.utils import make_msgid

from bot.routes import Route
from bot.runtime.app import Runtime
from bot.settings import Settings
from bridges.email.smtp import smtp_sender
from bridges.matrix.client import recent_messages

WAIT_SECONDS = 30.0


class DemoError(Exception):
    pass


def sample_email(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice Example <alice@partner.test>"
    msg["To"] = to
    msg["Subject"] = "Quarterly numbers — can you check?"
    msg["Message-ID"] = make_msgid(domain="partner.test")
    msg.set_content("Hi team,\n\nthe Q3 numbers are attached. Can you check them before "
                    "Friday?\n\nThanks,\nAlice\n-- \nAlice Example | Partner Ltd\n")
    msg.add_attachment(b"quarter,revenue\nQ3,1200000\n", maintype="text", subtype="csv",
                       filename="q3.csv")
    return msg


async def run_demo(settings: Settings, invite: str | None, keep_running: bool) -> None:
    if settings.matrix is None or settings.imap is None or settings.smtp is None \
            or settings.bot_email is None:
        raise DemoError("the demo needs Matrix, IMAP, SMTP and SWITCHBOARD_BOT_EMAIL set; "
                        "run it through scripts/demo.sh, which starts the local services")
    probe = await Runtime.start(settings)
    assert probe.matrix is not None
    created = await probe.matrix.client.room_create(
        name=f"Switchboard demo {time.strftime('%H:%M:%S')}",
        invite=[invite] if invite else [])
    room = getattr(created, "room_id", None)
    await probe.close()
    if room is None:
        raise DemoError(f"could not create the demo room: {created}")
    print(f"1. Matrix room {room} created" + (f", {invite} invited" if invite else ""))
    routed = dataclasses.replace(settings, routes=(*settings.routes,
                                                   Route(settings.bot_email, "matrix", room)))
    runtime = await Runtime.start(routed)
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.serve(stop))
    try:
        for _ in range(100):
            if runtime.ingests and runtime.ingests[0].caught_up.is_set():
                break
            await asyncio.sleep(0.1)
        print(f"2. IMAP ingest watching {settings.imap.user} on "
              f"{settings.imap.host}:{settings.imap.port}")
        email = sample_email(settings.bot_email)
        sent_at = time.monotonic()
        sender = smtp_sender(settings, runtime.oauth)
        assert sender is not None
        await sender.send(email)
        print(f"3. sample email {email['Message-ID']} sent over SMTP to {settings.bot_email}")
        assert runtime.matrix is not None
        post = None
        while post is None and time.monotonic() - sent_at < WAIT_SECONDS:
            await asyncio.sleep(0.2)
            for event in await recent_messages(runtime.matrix.client, room):
                if "Quarterly numbers" in event.get("content", {}).get("body", ""):
                    post = event
        if post is None:
            raise DemoError(f"the email did not reach {room} within {WAIT_SECONDS:.0f} s; "
                            "see the log above")
        print(f"4. posted in {room} after {time.monotonic() - sent_at:.2f} s "
              f"(event {post['event_id']}):\n")
        for line in post["content"]["body"].splitlines():
            print(f"   | {line}")
        if keep_running:
            print("\nSwitchboard keeps running; press Ctrl-C to stop.")
            await asyncio.Event().wait()
    finally:
        stop.set()
        await serving
        await runtime.close()
