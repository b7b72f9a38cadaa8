"""Pure admission decision: how many due requests may be dialed now, given slots and rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.ledger.records import Admission, Cap, LimitName, Limits, Usage
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
    caps: tuple[Cap, ...] = (),
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
        caps=caps,
    )


def caps_for(per_hour: int, per_day: int, burst: int) -> tuple[Cap, ...]:
    """The hourly and daily caps (0: none), and the smoothing window that spreads the hour."""
    caps = []
    if per_hour > 0:
        caps.append(Cap("hourly", per_hour, 3600.0))
        if burst > 0:
            caps.append(Cap("smoothing", burst, burst * 3600.0 / per_hour))
    if per_day > 0:
        caps.append(Cap("daily", per_day, 86400.0))
    return tuple(caps)


def settings_limits(settings: Settings, *, owner: str, limit: int, pace: float = 1.0) -> Limits:
    """The configured limits for a round of at most `limit` claims, the rate times the pace."""
    return limits_for(
        owner=owner,
        limit=limit,
        max_concurrent=settings.max_concurrent_calls,
        max_per_second=settings.max_calls_per_second * pace,
        slot_lease_s=settings.slot_lease_s,
        caps=caps_for(
            settings.max_calls_per_hour, settings.max_calls_per_day, settings.smoothing_burst
        ),
    )


def admit(usage: Usage, limits: Limits) -> Admission:
    """Admit as many due requests as the free slots, the rate and every cap allow."""
    if usage.due <= 0:
        return Admission(admitted=0, limited_by=None)
    budgets: list[tuple[int, LimitName]] = [
        (max(0, limits.max_concurrent - usage.active_slots), "concurrency"),
        (max(0, limits.rate_calls - usage.started_in_window), "rate"),
    ]
    placed = usage.placed_in_caps or (0,) * len(limits.caps)
    budgets += [(max(0, c.calls - n), c.name) for c, n in zip(limits.caps, placed, strict=True)]
    budget, name = min(budgets, key=lambda b: b[0])
    admitted = min(usage.due, budget)
    return Admission(admitted=admitted, limited_by=None if admitted == usage.due else name)
