"""Assertions and small helpers shared by the fault scenarios."""

from __future__ import annotations

import os
import random
from typing import Any

from tests.support.tally import Tally

# One seed for the whole suite (DIALER_FAULTS_SEED to replay another); each scenario derives
# its own generator from it and its name, so scenarios do not shift each other's draws.
SEED = int(os.environ.get("DIALER_FAULTS_SEED", "20250917"))


def rng_for(name: str) -> random.Random:
    """A generator seeded by the suite seed and the scenario's name."""
    return random.Random(f"{SEED}:{name}")


def assert_settled_once(tally: Tally) -> None:
    """The invariants: nothing lost (every request has a final event), nobody dialed twice."""
    assert tally.duplicates == 0, f"requests dialed twice: {tally.summary()}"
    assert tally.lost == 0, f"requests without a final event: {tally.summary()}"


def assert_dialed_once_or_settled_without_a_call(tally: Tally) -> None:
    """The invariants, and: a request that Bland has no call for was settled for a reason
    that needs none (`call.unresolved` after an ambiguous failure that is never redialed,
    `call.failed` at dial, `call.rejected`...), never as `call.completed`."""
    assert_settled_once(tally)
    assert not tally.unexplained_ids, f"completed, but no call at Bland: {tally.summary()}"


def quantiles(values: list[float]) -> dict[str, Any]:
    """count, median, p90 and max, rounded (for notes)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "count": len(ordered),
        "median": round(pick(0.5), 3),
        "p90": round(pick(0.9), 3),
        "max": round(ordered[-1], 3),
    }
