"""The bridges' exception family; each carries what the user needs to act."""

from __future__ import annotations


class BridgeError(Exception):
    """A network refused or failed an operation.

    ``transient`` errors (rate limits, outages) are worth retrying later; the others
    (unknown channel, missing permission) need a person to change something.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class MailError(BridgeError):
    """IMAP or SMTP trouble."""


class SlackError(BridgeError):
    """Slack's Web API answered ok:false, or could not be reached."""

    def __init__(self, message: str, error: str = "", *, transient: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.error = error  # Slack's error code, e.g. "channel_not_found"


class MatrixError(BridgeError):
    """The homeserver refused or failed a request."""
