"""The bridges' exception family; each carries what the user needs to act."""

from __future__ import annotations


class BridgeError(Exception):
    """A network refused or failed an operation."""


class MailError(BridgeError):
    """IMAP or SMTP trouble."""


class SlackError(BridgeError):
    """Slack's Web API answered ok:false, or could not be reached."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error  # Slack's error code, e.g. "channel_not_found"


class MatrixError(BridgeError):
    """The homeserver refused or failed a request."""
