"""Logging never lets a message body or a secret through, at any level."""

from __future__ import annotations

import io
import logging

from bot import logs


def test_library_debug_lines_with_bodies_are_not_written_even_at_debug() -> None:
    stream = io.StringIO()
    logs.configure("DEBUG", "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    # What slack_sdk writes at DEBUG for every call: the request, with the text posted.
    logging.getLogger("slack_sdk.web.async_base_client").debug(
        "Sending a request - url: https://slack.com/api/chat.postMessage, body: "
        "{'text': 'Your new salary is 100k'}, headers: {'Authorization': 'Bearer xoxb-1'}")
    logging.getLogger("nio.client.async_client").debug("body: secret text")
    # A library that lowers its own logger again is still filtered at the handler.
    logging.getLogger("aiosmtplib").setLevel(logging.DEBUG)
    logging.getLogger("aiosmtplib.protocol").debug("DATA Subject: secret text")
    logging.getLogger("bot.flows.reply_in_chat").debug("delivery d123 claimed")
    written = stream.getvalue()
    assert "salary" not in written and "xoxb" not in written and "secret" not in written
    assert "delivery d123 claimed" in written
    logs.configure("INFO", "text")
