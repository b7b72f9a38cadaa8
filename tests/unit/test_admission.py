"""Pure admission: free slots and a strict per-second rate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.dialing.admission import RateWindow, admit, rate_window
from service.ledger import Admission, Limits, Usage


@pytest.mark.parametrize(
    ("rate", "calls", "window_s"),
    [(1.0, 1, 1.0), (10.0, 10, 1.0), (2.5, 2, 1.0), (0.5, 1, 2.0), (0.1, 1, 10.0)],
)
def test_rate_window(rate: float, calls: int, window_s: float) -> None:
    window = rate_window(rate)
    assert window.calls == calls
    assert math.isclose(window.window_s, window_s)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_a_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="max_per_second"):
        rate_window(rate)


def decide(
    *,
    wanted: int,
    active_slots: int,
    max_concurrent: int,
    started_in_window: int,
    window: RateWindow,
) -> Admission:
    """admit() for these counts and limits."""
    usage = Usage(due=wanted, active_slots=active_slots, started_in_window=started_in_window)
    limits = Limits("t", 100, max_concurrent, window.calls, window.window_s, 60.0)
    return admit(usage, limits)


def test_everything_wanted_is_admitted_within_the_limits() -> None:
    decision = decide(
        wanted=3, active_slots=2, max_concurrent=10, started_in_window=0, window=RateWindow(5, 1.0)
    )
    assert (decision.admitted, decision.limited_by) == (3, None)


def test_concurrency_limits() -> None:
    decision = decide(
        wanted=5, active_slots=8, max_concurrent=10, started_in_window=0, window=RateWindow(5, 1.0)
    )
    assert (decision.admitted, decision.limited_by) == (2, "concurrency")


def test_rate_limits() -> None:
    decision = decide(
        wanted=5, active_slots=0, max_concurrent=10, started_in_window=4, window=RateWindow(5, 1.0)
    )
    assert (decision.admitted, decision.limited_by) == (1, "rate")


def test_over_the_limits_admits_nothing() -> None:
    decision = decide(
        wanted=5, active_slots=12, max_concurrent=10, started_in_window=9, window=RateWindow(5, 1.0)
    )
    assert decision.admitted == 0
    assert decision.limited_by is not None


def test_nothing_wanted() -> None:
    decision = decide(
        wanted=0, active_slots=0, max_concurrent=1, started_in_window=0, window=RateWindow(1, 1.0)
    )
    assert (decision.admitted, decision.limited_by) == (0, None)


@given(
    wanted=st.integers(0, 100),
    active=st.integers(0, 100),
    max_concurrent=st.integers(1, 100),
    started=st.integers(0, 100),
    calls=st.integers(1, 100),
)
def test_never_beyond_either_limit(
    wanted: int, active: int, max_concurrent: int, started: int, calls: int
) -> None:
    decision = decide(
        wanted=wanted,
        active_slots=active,
        max_concurrent=max_concurrent,
        started_in_window=started,
        window=RateWindow(calls, 1.0),
    )
    assert 0 <= decision.admitted <= wanted
    assert active + decision.admitted <= max(active, max_concurrent)
    assert started + decision.admitted <= max(started, calls)
    assert (decision.limited_by is None) == (decision.admitted == wanted)


@given(rate=st.floats(0.01, 1000, allow_nan=False))
def test_the_window_never_allows_more_than_the_rate_per_second(rate: float) -> None:
    window = rate_window(rate)
    # Calls admitted within any 1-second span: at most ceil(1 / window_s) windows' worth.
    per_second = window.calls * math.ceil(1.0 / window.window_s - 1e-9)
    assert per_second <= max(rate, 1.0)
