"""Work done side by side, except where order matters.

Emails of different conversations do not wait for each other; emails of one
conversation must reach chat in the order they arrived (a reply posted before the
email it answers would start a thread of its own). Each piece of work names the keys
it touches (its Message-ID, what it answers); work that shares a key with earlier work
starts only once that work is over, and never after it failed: the failed one is tried
again first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class LaneBlocked(Exception):
    """Earlier work of the same lane failed: this work was not started (try both again)."""


class Lanes:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("at least one piece of work must be able to run")
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[str, asyncio.Task[Any]] = {}

    async def submit(self, keys: Iterable[str], work: Callable[[], Awaitable[T]]
                     ) -> asyncio.Task[T]:
        """Start ``work`` once a slot is free and the earlier work sharing one of ``keys``
        is over; returns its task at once (after the slot is taken)."""
        await self._slots.acquire()
        return self._start(set(keys), work)

    async def submit_unless(self, stop: asyncio.Event, keys: Iterable[str],
                            work: Callable[[], Awaitable[T]]) -> asyncio.Task[T] | None:
        """``submit``, unless ``stop`` is set before a slot is free: then None, and
        ``work`` never starts (a stop during a backlog starts nothing more)."""
        if stop.is_set():
            return None
        if not self._slots.locked():  # a free slot: taken at once, nothing to wait for
            await self._slots.acquire()
            return self._start(set(keys), work)
        slot = asyncio.ensure_future(self._slots.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({slot, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not slot.done():
            slot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot
        if slot.cancelled() or not slot.done():
            return None
        if stop.is_set():
            self._slots.release()
            return None
        return self._start(set(keys), work)

    def _start(self, keys: set[str], work: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        before = {tail for key in keys if (tail := self._tails.get(key)) is not None
                  and not tail.done()}
        task: asyncio.Task[T] = asyncio.create_task(self._after(before, work))
        for key in keys:
            self._tails[key] = task
        task.add_done_callback(lambda done: self._finished(done, keys))
        return task

    async def run(self, keys: Iterable[str], work: Callable[[], Awaitable[T]]) -> T:
        """``submit`` and wait for the outcome."""
        return await (await self.submit(keys, work))

    @staticmethod
    async def _after(before: set[asyncio.Task[Any]], work: Callable[[], Awaitable[T]]) -> T:
        if before:
            await asyncio.wait(before)
            if any(t.cancelled() or t.exception() is not None for t in before):
                raise LaneBlocked("an earlier email of the same conversation failed")
        return await work()

    def _finished(self, task: asyncio.Task[T], keys: set[str]) -> None:
        self._slots.release()
        for key in keys:
            if self._tails.get(key) is task:
                del self._tails[key]
