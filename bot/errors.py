"""The exception families the core catches, declared by the core: the networks' and
the store's adapters raise these (or their own subclasses), so a flow never imports an
adapter to handle a failure."""

from __future__ import annotations


class BridgeError(Exception):
    """A network refused or failed an operation.

    ``transient`` errors (rate limits, outages) are worth retrying later; the others
    (unknown channel, missing permission) need a person to change something.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class TransientFailure(Exception):
    """Work that failed for a reason that may pass (an outage, a rate limit): the same
    input is to be tried again later, and nothing of it is lost."""


class StoreError(Exception):
    """Something went wrong reading or writing Switchboard's state."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached; nothing was written."""


class AddressTaken(StoreError):
    """The address already belongs to another identity."""

    def __init__(self, address: str, identity_id: str) -> None:
        self.address = address
        self.identity_id = identity_id
        super().__init__(f"{address} is already linked to another identity; "
                         "unlink it there first")


class NotFound(StoreError):
    """The record asked for does not exist."""


class InvalidTransition(StoreError):
    """A delivery cannot move from its current state to the one asked for."""

    def __init__(self, delivery_id: str, current: str, wanted: str) -> None:
        self.delivery_id = delivery_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"delivery {delivery_id} is {current}; it cannot become {wanted}")
