"""Pure retry delays (exponential backoff, full jitter, poll schedule) and one `Backoff` helper."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

Uniform = Callable[[], float]  # a draw in [0, 1): random.random, or a fixed value in tests


def ceiling_s(attempt: int, base_s: float, cap_s: float) -> float:
    """The largest delay before retry number `attempt` (1-based): base * 2**(attempt-1), capped."""
    if attempt < 1:
        return 0.0
    # Past 2**62 the product only grows; stop early so huge attempt numbers cannot overflow.
    exponent = min(attempt - 1, 62)
    return float(min(cap_s, base_s * 2.0**exponent))


def full_jitter_s(
    attempt: int, base_s: float, cap_s: float, draw: Uniform = random.random
) -> float:
    """A delay drawn uniformly from [0, ceiling): spreads retries of many clients apart."""
    return ceiling_s(attempt, base_s, cap_s) * draw()


def retry_delay_s(
    attempt: int,
    base_s: float,
    cap_s: float,
    *,
    at_least_s: float | None = None,
    draw: Uniform = random.random,
) -> float:
    """Full-jitter delay, never shorter than a floor the far side asked for (e.g. 10 s)."""
    delay = full_jitter_s(attempt, base_s, cap_s, draw)
    return max(delay, at_least_s or 0.0)


def poll_delay_s(overdue_for_s: float, interval_s: float, cap_s: float) -> float:
    """Next look at an overdue call: about as long again as it has been overdue, bounded.

    Checks thin out geometrically (1, 2, 4, ... times the interval) without a counter column.
    """
    return float(min(cap_s, max(interval_s, overdue_for_s)))


@dataclass
class Backoff:
    """Delays for consecutive failures of one loop: base, 2 x base, 4 x base, ... up to cap.

    `next_s()` counts a failure and returns the delay before trying again; `reset()` after a
    success. With `jitter`, each delay is drawn from [0, ceiling) (full jitter).
    """

    base_s: float = 0.2
    cap_s: float = 5.0
    jitter: bool = False
    draw: Uniform = field(default=random.random, repr=False)
    failures: int = 0

    def next_s(self) -> float:
        """One more failure: the delay before the next try."""
        self.failures += 1
        if self.jitter:
            return full_jitter_s(self.failures, self.base_s, self.cap_s, self.draw)
        return ceiling_s(self.failures, self.base_s, self.cap_s)

    def reset(self) -> None:
        """A success: the next failure starts from `base_s` again."""
        self.failures = 0
