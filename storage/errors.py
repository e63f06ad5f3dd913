"""The store's exception family: every Redis problem reaches callers as a StoreError."""

from __future__ import annotations


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
