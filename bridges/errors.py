"""The bridges' own errors: each network's, under the core's BridgeError."""

from __future__ import annotations

from bot.errors import BridgeError


class MailError(BridgeError):
    """IMAP or SMTP trouble."""


class SlackError(BridgeError):
    """Slack's Web API answered ok:false, or could not be reached."""

    def __init__(self, message: str, error: str = "", *, transient: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, transient=transient)
        self.error = error  # Slack's error code, e.g. "channel_not_found"
        self.retry_after = retry_after  # a 429's Retry-After, in seconds


class MatrixError(BridgeError):
    """The homeserver refused or failed a request."""
