"""Retry delays: exponential ceiling, full jitter inside it, floors, and the poll schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.backoff import ceiling_s, full_jitter_s, poll_delay_s, retry_delay_s


@pytest.mark.parametrize(
    ("attempt", "expected_s"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10_000, 60.0)],
)
def test_ceiling_doubles_from_base_and_stops_at_the_cap(attempt: int, expected_s: float) -> None:
    assert ceiling_s(attempt, base_s=1.0, cap_s=60.0) == expected_s


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert full_jitter_s(3, 1.0, 60.0, draw=lambda: 0.0) == 0.0
    assert full_jitter_s(3, 1.0, 60.0, draw=lambda: 0.5) == 2.0
    assert full_jitter_s(3, 1.0, 60.0, draw=lambda: 0.999) == pytest.approx(3.996)


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base_s=st.floats(min_value=0.001, max_value=10.0),
    cap_s=st.floats(min_value=0.01, max_value=3600.0),
    seed=st.integers(),
)
def test_jitter_never_leaves_its_bounds(
    attempt: int, base_s: float, cap_s: float, seed: int
) -> None:
    delay = full_jitter_s(attempt, base_s, cap_s, draw=random.Random(seed).random)
    assert 0.0 <= delay <= cap_s


def test_jittered_delays_spread_apart() -> None:
    draw = random.Random(7).random
    delays = {round(full_jitter_s(5, 1.0, 60.0, draw), 3) for _ in range(50)}
    assert len(delays) > 40
    assert max(delays) <= 16.0


def test_a_floor_from_the_far_side_is_honoured() -> None:
    assert retry_delay_s(1, 1.0, 60.0, at_least_s=10.0, draw=lambda: 0.9) == 10.0
    assert retry_delay_s(8, 1.0, 60.0, at_least_s=10.0, draw=lambda: 0.5) == 30.0
    assert retry_delay_s(2, 1.0, 60.0, draw=lambda: 0.5) == 1.0


@pytest.mark.parametrize(
    ("overdue_for_s", "expected_s"),
    [(0.0, 15.0), (10.0, 15.0), (40.0, 40.0), (5000.0, 1800.0)],
)
def test_overdue_polls_thin_out(overdue_for_s: float, expected_s: float) -> None:
    assert poll_delay_s(overdue_for_s, interval_s=15.0, cap_s=1800.0) == expected_s
