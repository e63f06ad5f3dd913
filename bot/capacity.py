"""How many RQ workers the backlog calls for: grow at once, shrink only when the
queue has stayed short for two looks in a row (a burst's tail does not flap the pool)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    low: int
    high: int
    jobs_per_worker: int


@dataclass(frozen=True)
class Decision:
    workers: int  # how many to run from now on
    reason: str  # the figures behind it, for the log
    wants_fewer: bool = False  # the backlog asks for fewer than are running

    def changes(self, current: int) -> bool:
        return self.workers != current


def decide(depth: int, current: int, bounds: Bounds, short_looks: int) -> Decision:
    """``short_looks``: how many looks before this one in a row wanted fewer workers."""
    wanted = min(bounds.high, max(bounds.low, math.ceil(depth / bounds.jobs_per_worker)))
    figures = (f"{depth} job(s) waiting, {bounds.jobs_per_worker} per worker, "
               f"bounds {bounds.low}..{bounds.high}")
    if wanted > current:
        return Decision(wanted, f"grow {current} -> {wanted}: {figures}")
    if wanted < current and short_looks >= 1:
        # One at a time: a worker finishing its job is cheaper than a cold start.
        return Decision(current - 1, f"shrink {current} -> {current - 1}: {figures}", True)
    return Decision(current, f"keep {current}: {figures}", wanted < current)
