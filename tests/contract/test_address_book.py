"""The address book against both stores (memory and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import AddressTaken, NotFound
from bot.model import Address, Provenance
from tests.contract.conftest import AnyStore

ALICE_MAIL = Address.email("Alice Example <Alice@Example.COM>")
ALICE_SLACK = Address.slack("T0TEAM1", "U0ALICE")
ALICE_MATRIX = Address.matrix("@alice:switchboard.test")


async def test_resolves_every_address_of_an_identity(store: AnyStore) -> None:
    book = store.address_book
    await book.link(ALICE_MAIL, provenance=Provenance.IMPORTED, verified=True)
    await book.link(ALICE_SLACK, provenance=Provenance.LEARNED, verified=True, to=ALICE_MAIL)
    await book.link(ALICE_MATRIX, provenance=Provenance.SELF_LINKED, verified=False,
                    to=ALICE_SLACK)

    for spelling in ("alice@example.com", "ALICE@example.com", "Alice <alice@EXAMPLE.com>"):
        identity = await book.resolve(Address.email(spelling))
        assert identity is not None
        assert set(identity.addresses()) == {ALICE_MAIL, ALICE_SLACK, ALICE_MATRIX}
    by_matrix = await book.resolve(ALICE_MATRIX)
    assert by_matrix is not None
    mapping = by_matrix.mapping(ALICE_MATRIX)
    assert mapping is not None
    assert (mapping.provenance, mapping.verified) == (Provenance.SELF_LINKED, False)
    slack = by_matrix.mapping(ALICE_SLACK)
    assert slack is not None and slack.provenance is Provenance.LEARNED and slack.verified


async def test_unknown_address_resolves_to_none(store: AnyStore) -> None:
    assert await store.address_book.resolve(Address.email("nobody@example.com")) is None


async def test_an_address_belongs_to_one_identity(store: AnyStore) -> None:
    book = store.address_book
    bob = Address.email("bob@example.com")
    await book.link(ALICE_MAIL, provenance=Provenance.IMPORTED, verified=True)
    await book.link(bob, provenance=Provenance.IMPORTED, verified=True)
    with pytest.raises(AddressTaken) as refused:
        await book.link(ALICE_MAIL, provenance=Provenance.SELF_LINKED, verified=True, to=bob)
    assert "already linked" in str(refused.value)
    alice = await book.resolve(ALICE_MAIL)
    assert alice is not None and bob not in alice.addresses()


async def test_relinking_updates_provenance_and_verification(store: AnyStore) -> None:
    book = store.address_book
    await book.link(ALICE_MAIL, provenance=Provenance.LEARNED, verified=False)
    await book.link(ALICE_MAIL, provenance=Provenance.SELF_LINKED, verified=True)
    identity = await book.resolve(ALICE_MAIL)
    assert identity is not None and len(identity.mappings) == 1
    assert identity.mappings[0].provenance is Provenance.SELF_LINKED
    assert identity.mappings[0].verified


async def test_linking_to_an_unknown_anchor_is_refused(store: AnyStore) -> None:
    with pytest.raises(NotFound, match="not in the address book"):
        await store.address_book.link(ALICE_SLACK, provenance=Provenance.LEARNED, verified=True,
                                      to=ALICE_MAIL)
    assert await store.address_book.resolve(ALICE_SLACK) is None


async def test_unlink_removes_one_address_and_keeps_the_rest(store: AnyStore) -> None:
    book = store.address_book
    await book.link(ALICE_MAIL, provenance=Provenance.IMPORTED, verified=True)
    await book.link(ALICE_SLACK, provenance=Provenance.LEARNED, verified=True, to=ALICE_MAIL)
    assert await book.unlink(ALICE_MAIL)
    assert await book.resolve(ALICE_MAIL) is None
    rest = await book.resolve(ALICE_SLACK)
    assert rest is not None and rest.addresses() == [ALICE_SLACK]
    assert not await book.unlink(ALICE_MAIL)
    assert await book.unlink(ALICE_SLACK)
    assert await book.resolve(ALICE_SLACK) is None


async def test_concurrent_claims_of_one_address_have_one_winner(store: AnyStore) -> None:
    book = store.address_book
    owners = [Address.email(f"owner{i}@example.com") for i in range(8)]
    for owner in owners:
        await book.link(owner, provenance=Provenance.IMPORTED, verified=True)
    claimed = Address.matrix("@shared:switchboard.test")
    results = await asyncio.gather(
        *(book.link(claimed, provenance=Provenance.SELF_LINKED, verified=True, to=o)
          for o in owners), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, AddressTaken) for r in results if isinstance(r, Exception))
