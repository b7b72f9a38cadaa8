"""Bland's plan caps and the pure admission rules of POST /v1/calls (bland-api.md section 7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

RATE_LIMIT_MESSAGE = "Rate limit exceeded"
SAME_NUMBER_MESSAGE = (
    "Calls can only be sent every 10 seconds to the same number. Please try again in a few seconds."
)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Plan:
    """One plan's caps (None: unlimited) and its price per connected minute in USD."""

    name: str
    max_concurrent: int | None
    max_per_hour: int | None
    max_per_day: int | None
    usd_per_minute: float


PLANS: dict[str, Plan] = {
    "start": Plan("start", 10, 100, 100, 0.14),
    "build": Plan("build", 50, 1000, 2000, 0.12),
    "scale": Plan("scale", 100, 1000, 5000, 0.11),
    # Enterprise prices are "custom"; the sandbox bills them like Scale.
    "enterprise": Plan("enterprise", None, None, None, 0.11),
}
MINIMUM_CHARGE_USD = 0.015


def plan_with_overrides(
    name: str,
    *,
    max_concurrent: int | None = None,
    max_per_hour: int | None = None,
    max_per_day: int | None = None,
) -> Plan:
    """A preset with any cap replaced (a value of 0 means unlimited)."""
    plan = PLANS[name]
    changes: dict[str, int | None] = {}
    for key, value in (
        ("max_concurrent", max_concurrent),
        ("max_per_hour", max_per_hour),
        ("max_per_day", max_per_day),
    ):
        if value is not None:
            changes[key] = value or None
    return replace(plan, **changes)  # type: ignore[arg-type]  # keys are Plan fields


def same_number_blocked(
    last_created_at: datetime | None, now: datetime, window_s: float = 10.0
) -> bool:
    """Bland's rule: at most one call every 10 seconds to the same number."""
    if last_created_at is None or window_s <= 0:
        return False
    return now - last_created_at < timedelta(seconds=window_s)


def over_rate_caps(plan: Plan, created_times: Sequence[datetime], now: datetime) -> bool:
    """True when one more call would exceed the hourly or the daily cap (rolling windows)."""
    if plan.max_per_hour is not None:
        in_hour = sum(1 for t in created_times if now - t < HOUR)
        if in_hour >= plan.max_per_hour:
            return True
    if plan.max_per_day is not None:
        in_day = sum(1 for t in created_times if now - t < DAY)
        if in_day >= plan.max_per_day:
            return True
    return False


def slot_free(plan: Plan, active: int) -> bool:
    """True when one more call may be live under the concurrency cap."""
    return plan.max_concurrent is None or active < plan.max_concurrent


def price_usd(plan: Plan, connected_s: float) -> float:
    """Per-second proration of the per-minute price, with Bland's $0.015 minimum per attempt."""
    return round(max(MINIMUM_CHARGE_USD, plan.usd_per_minute * connected_s / 60.0), 4)
