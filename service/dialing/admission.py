"""Pure admission decision: how many due requests may be dialed now, given slots and rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.ledger.records import Admission, LimitName, Limits, Usage
from service.settings import Settings


@dataclass(frozen=True)
class RateWindow:
    """At most `calls` attempts may start within any `window_s` seconds."""

    calls: int
    window_s: float


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


def limits_for(
    *,
    owner: str,
    limit: int,
    max_concurrent: int,
    max_per_second: float,
    slot_lease_s: float,
) -> Limits:
    """The limits of one claim round, the rate as its strict sliding window."""
    window = rate_window(max_per_second)
    return Limits(
        owner=owner,
        limit=limit,
        max_concurrent=max_concurrent,
        rate_calls=window.calls,
        rate_window_s=window.window_s,
        slot_lease_s=slot_lease_s,
    )


def settings_limits(settings: Settings, *, owner: str, limit: int) -> Limits:
    """The configured limits for a round of at most `limit` claims."""
    return limits_for(
        owner=owner,
        limit=limit,
        max_concurrent=settings.max_concurrent_calls,
        max_per_second=settings.max_calls_per_second,
        slot_lease_s=settings.slot_lease_s,
    )


def admit(usage: Usage, limits: Limits) -> Admission:
    """Admit as many due requests as both the free slots and the rate budget allow."""
    if usage.due <= 0:
        return Admission(admitted=0, limited_by=None)
    free_slots = max(0, limits.max_concurrent - usage.active_slots)
    rate_budget = max(0, limits.rate_calls - usage.started_in_window)
    admitted = min(usage.due, free_slots, rate_budget)
    if admitted == usage.due:
        return Admission(admitted=admitted, limited_by=None)
    limited_by: LimitName = "concurrency" if free_slots <= rate_budget else "rate"
    return Admission(admitted=admitted, limited_by=limited_by)
