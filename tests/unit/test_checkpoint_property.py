"""The checkpoint's promise, over every order hypothesis can find: it never passes a UID
whose email is not done, and once everything before a UID is done, it gets there."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from bridges.email.imap import _Progress

# A catch-up: some UIDs (with gaps, as expunges leave), each finishing or failing, in an
# order of its own.
uids = st.lists(st.integers(1, 500), min_size=1, max_size=40, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), found=uids)
def test_the_checkpoint_never_passes_an_email_in_hand_or_failed(data: st.DataObject,
                                                                 found: list[int]) -> None:
    async def run() -> None:
        progress = _Progress(0)
        for uid in found:
            progress.started(uid)
        failed = set(data.draw(st.sets(st.sampled_from(found), max_size=3)))
        order = data.draw(st.permutations(found))
        done: set[int] = set()
        for uid in order:
            if uid in failed:
                progress.dropped(uid)
            else:
                progress.done(uid)
                done.add(uid)
            # Never past a UID that is still in hand or that failed.
            assert all(u in done for u in found if u <= progress.checkpoint)
        first_failed = min(failed, default=None)
        expected = max((u for u in found if first_failed is None or u < first_failed),
                       default=0)
        assert progress.checkpoint == expected
        await asyncio.wait_for(progress.idle(), 1)

    asyncio.run(run())
