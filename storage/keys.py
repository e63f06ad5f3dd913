"""Every Redis key Switchboard uses, built here and nowhere else, under one prefix."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str = "sb") -> None:
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # address book
    def address_index(self) -> str:
        """hash: canonical address -> identity id (one HGET per look-up)."""
        return self._k("addr")

    def identity(self, identity_id: str) -> str:
        """hash: canonical address -> mapping record (provenance, verified, added_at)."""
        return self._k("id", identity_id)

    # conversations and history
    def conversation_entries(self, conversation_id: str) -> str:
        """hash: entry id -> entry record; HSETNX makes an append happen once."""
        return self._k("conv", conversation_id, "entries")

    def conversation_timeline(self, conversation_id: str) -> str:
        """sorted set: entry id scored by its time."""
        return self._k("conv", conversation_id, "timeline")

    def person_history(self, address: str) -> str:
        """sorted set: ``conversation id / entry id`` scored by time, per participant."""
        return self._k("hist", address)

    # deliveries
    def delivery(self, delivery_id: str) -> str:
        return self._k("dlv", delivery_id)

    def delivery_log(self, delivery_id: str) -> str:
        """list: every state change of one delivery, oldest first."""
        return self._k("dlv", delivery_id, "log")

    def deliveries_in_state(self, state: str) -> str:
        """sorted set: delivery ids currently in ``state``, scored by creation time."""
        return self._k("dlv-state", state)

    def deliveries_by_sender(self, address: str) -> str:
        return self._k("dlv-from", address)
