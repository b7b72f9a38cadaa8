"""Pure admission decision: how many due requests may be dialed now, given slots and rate."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateWindow:
    """At most `calls` attempts may start within any `window_s` seconds."""

    calls: int
    window_s: float


@dataclass(frozen=True)
class Admission:
    """How many claims are admitted, and which limit (if any) held the rest back."""

    admitted: int
    limited_by: str | None  # "concurrency", "rate" or None


def rate_window(max_per_second: float) -> RateWindow:
    """The sliding window that enforces `max_per_second` strictly.

    A token bucket would let a full bucket plus one second of refill through within one second
    (up to twice the rate), so the rate is enforced as a sliding log over attempt start times:
    floor(rate) calls per second when rate >= 1 (never more than the rate in any 1-second
    window), and one call per 1/rate seconds below 1 call per second.
    """
    if not math.isfinite(max_per_second) or max_per_second <= 0:
        raise ValueError("max_per_second must be a positive finite number")
    if max_per_second >= 1:
        return RateWindow(calls=math.floor(max_per_second), window_s=1.0)
    return RateWindow(calls=1, window_s=1.0 / max_per_second)


def admit(
    *,
    wanted: int,
    active_slots: int,
    max_concurrent: int,
    started_in_window: int,
    window: RateWindow,
) -> Admission:
    """Admit as many of `wanted` as both the free slots and the rate budget allow."""
    if wanted <= 0:
        return Admission(admitted=0, limited_by=None)
    free_slots = max(0, max_concurrent - active_slots)
    rate_budget = max(0, window.calls - started_in_window)
    admitted = min(wanted, free_slots, rate_budget)
    if admitted == wanted:
        return Admission(admitted=admitted, limited_by=None)
    limited_by = "concurrency" if free_slots <= rate_budget else "rate"
    return Admission(admitted=admitted, limited_by=limited_by)
