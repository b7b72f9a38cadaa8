"""Pure: hourly, daily and smoothing caps in the admission decision; plan presets; the pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.dialing.admission import admit, caps_for, limits_for, settings_limits
from service.ledger import Usage
from service.pacing import lowered, pace_at
from service.settings import Settings

T0 = datetime(2026, 6, 2, 12, tzinfo=UTC)


def test_caps_from_the_settings() -> None:
    caps = caps_for(per_hour=100, per_day=100, burst=10)
    assert [(c.name, c.calls, c.window_s) for c in caps] == [
        ("hourly", 100, 3600.0),
        ("smoothing", 10, 360.0),
        ("daily", 100, 86400.0),
    ]
    assert caps_for(0, 0, 10) == ()


@pytest.mark.parametrize(
    ("plan", "concurrent", "hourly", "daily"),
    [("start", 10, 100, 100), ("build", 50, 1000, 2000), ("scale", 100, 1000, 5000)],
)
def test_plan_presets_fill_what_is_not_set(
    plan: str, concurrent: int, hourly: int, daily: int
) -> None:
    settings = Settings(plan=plan)
    assert (settings.max_concurrent_calls, settings.max_calls_per_hour) == (concurrent, hourly)
    assert settings.max_calls_per_day == daily
    assert Settings(plan=plan, max_calls_per_hour=7).max_calls_per_hour == 7


def test_enterprise_keeps_our_own_defaults() -> None:
    settings = Settings(plan="enterprise")
    assert (settings.max_calls_per_hour, settings.max_calls_per_day) == (0, 0)


def test_the_tightest_cap_names_the_wait() -> None:
    limits = settings_limits(
        Settings(max_calls_per_hour=10, max_calls_per_day=50, max_calls_per_second=100),
        owner="t",
        limit=20,
    )
    usage = Usage(due=20, active_slots=0, started_in_window=0, placed_in_caps=(8, 40))
    decision = admit(usage, limits)
    assert (decision.admitted, decision.limited_by) == (2, "hourly")


@given(
    due=st.integers(0, 50),
    active=st.integers(0, 20),
    placed=st.tuples(st.integers(0, 200), st.integers(0, 200)),
)
def test_never_more_than_any_budget(due: int, active: int, placed: tuple[int, int]) -> None:
    limits = limits_for(
        owner="t", limit=50, max_concurrent=10, max_per_second=5.0, slot_lease_s=60.0,
        caps=caps_for(per_hour=100, per_day=150, burst=0),
    )  # fmt: skip
    usage = Usage(due=due, active_slots=active, started_in_window=0, placed_in_caps=placed)
    admitted = admit(usage, limits).admitted
    assert 0 <= admitted <= due
    assert active + admitted <= max(active, 10)
    assert placed[0] + admitted <= max(placed[0], 100)
    assert placed[1] + admitted <= max(placed[1], 150)
    assert admitted <= 5


def test_the_pace_halves_to_a_floor_and_recovers() -> None:
    assert lowered(1.0, 0.1) == 0.5
    assert lowered(0.15, 0.1) == 0.1
    assert pace_at(0.5, T0, T0, 60.0) == 0.5
    assert pace_at(0.5, T0, T0 + timedelta(seconds=30), 60.0) == 0.75
    assert pace_at(0.5, T0, T0 + timedelta(seconds=90), 60.0) == 1.0
    assert pace_at(1.0, None, T0, 60.0) == 1.0
