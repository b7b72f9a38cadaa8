"""Pure admission decision: how many due requests may be dialed now, given slots and rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Bland's `max_duration` when a request does not set one, and the time a placed call may spend
# queued and ringing at Bland before its `max_duration` starts to run (plus clock skew).
DEFAULT_MAX_DURATION_MIN = 30
CALL_END_MARGIN_S = 3600.0


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


def slot_lease_for(configured_s: float, max_duration_min: object) -> float:
    """How long a slot is held without an outcome: `configured_s`, or longer for a long call.

    A slot freed while Bland may still be running the call lets a new call past
    `max_concurrent`, so the lease covers the call's `max_duration` (up to 12 h) plus a margin.
    """
    minutes = max_duration_min if isinstance(max_duration_min, int | float) else None
    if minutes is None or isinstance(minutes, bool) or not math.isfinite(minutes) or minutes <= 0:
        minutes = DEFAULT_MAX_DURATION_MIN
    return max(configured_s, float(minutes) * 60.0 + CALL_END_MARGIN_S)
