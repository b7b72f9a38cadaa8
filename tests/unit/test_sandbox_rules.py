"""The sandbox's pure decisions: caps, the 10-second rule, outcomes, faults, pricing."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from sandbox import plans
from sandbox.faults import FaultError, Faults, create_fault, updated, webhook_lost
from sandbox.outcomes import (
    BUSY_MESSAGE,
    FAILURE_MESSAGES,
    Durations,
    Shares,
    choose_outcome,
    disposition_tag,
)
from sandbox.webhooks import encode, retry_delay_s, sign

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "concurrent", "hourly", "daily"),
    [
        ("start", 10, 100, 100),
        ("build", 50, 1000, 2000),
        ("scale", 100, 1000, 5000),
        ("enterprise", None, None, None),
    ],
)
def test_plan_caps_match_blands_table(
    name: str, concurrent: int | None, hourly: int | None, daily: int | None
) -> None:
    plan = plans.PLANS[name]
    assert (plan.max_concurrent, plan.max_per_hour, plan.max_per_day) == (
        concurrent,
        hourly,
        daily,
    )


def test_overrides_replace_caps_and_zero_means_unlimited() -> None:
    plan = plans.plan_with_overrides("start", max_concurrent=2, max_per_day=0)
    assert (plan.max_concurrent, plan.max_per_hour, plan.max_per_day) == (2, 100, None)


@pytest.mark.parametrize(
    ("last_ago_s", "blocked"), [(None, False), (0.0, True), (9.9, True), (10.0, False), (60, False)]
)
def test_ten_second_rule(last_ago_s: float | None, blocked: bool) -> None:
    last = None if last_ago_s is None else NOW - timedelta(seconds=last_ago_s)
    assert plans.same_number_blocked(last, NOW) is blocked


def test_ten_second_rule_disabled_with_zero_window() -> None:
    assert plans.same_number_blocked(NOW, NOW, window_s=0) is False


def test_hourly_cap_counts_a_rolling_hour() -> None:
    plan = plans.plan_with_overrides("start", max_per_hour=2, max_per_day=10)
    old = NOW - timedelta(hours=1, seconds=1)
    assert not plans.over_rate_caps(plan, [old, old, NOW], NOW)
    assert plans.over_rate_caps(plan, [old, NOW - timedelta(minutes=59), NOW], NOW)


def test_daily_cap_counts_a_rolling_day() -> None:
    plan = plans.plan_with_overrides("start", max_per_hour=0, max_per_day=2)
    assert plans.over_rate_caps(plan, [NOW - timedelta(hours=23), NOW], NOW)
    assert not plans.over_rate_caps(plan, [NOW - timedelta(hours=25), NOW], NOW)


def test_unlimited_plan_never_over_caps() -> None:
    assert not plans.over_rate_caps(plans.PLANS["enterprise"], [NOW] * 10_000, NOW)
    assert plans.slot_free(plans.PLANS["enterprise"], 10_000)


def test_slot_free_below_the_concurrency_cap() -> None:
    plan = plans.PLANS["start"]
    assert plans.slot_free(plan, 9)
    assert not plans.slot_free(plan, 10)


def test_price_is_prorated_with_a_minimum() -> None:
    plan = plans.PLANS["start"]
    assert plans.price_usd(plan, 0) == 0.015
    assert plans.price_usd(plan, 60) == 0.14
    assert plans.price_usd(plan, 90) == 0.21


def test_outcomes_follow_the_shares() -> None:
    rng = random.Random(3)
    shares = Shares(human=0.5, voicemail=0, no_answer=0.5, busy=0, failed=0)
    kinds = [choose_outcome(rng, shares, Durations()).kind for _ in range(400)]
    assert set(kinds) == {"human", "no_answer"}
    assert 150 < kinds.count("human") < 250


@pytest.mark.parametrize(
    ("kind", "status", "answered_by"),
    [
        ("human", "completed", "human"),
        ("voicemail", "completed", "voicemail"),
        ("no_answer", "no-answer", "no-answer"),
        ("busy", "busy", None),
        ("failed", "failed", None),
    ],
)
def test_each_outcome_has_blands_status(kind: str, status: str, answered_by: str | None) -> None:
    shares = Shares(
        **{k: float(k == kind) for k in ("human", "voicemail", "no_answer", "busy", "failed")}
    )
    outcome = choose_outcome(random.Random(1), shares, Durations())
    assert (outcome.kind, outcome.status, outcome.answered_by) == (kind, status, answered_by)
    if kind == "busy":
        assert outcome.error_message == BUSY_MESSAGE
    elif kind == "failed":
        assert outcome.error_message in FAILURE_MESSAGES
    else:
        assert outcome.error_message is None
    assert (outcome.talk_s > 0) is (kind in {"human", "voicemail"})


def test_talk_time_stays_within_bounds() -> None:
    durations = Durations(min_talk_s=10, max_talk_s=20)
    shares = Shares(human=1, voicemail=0, no_answer=0, busy=0, failed=0)
    rng = random.Random(5)
    assert all(10 <= choose_outcome(rng, shares, durations).talk_s <= 20 for _ in range(100))


def test_same_seed_same_outcomes() -> None:
    first = [choose_outcome(random.Random(9), Shares(), Durations()) for _ in range(20)]
    second = [choose_outcome(random.Random(9), Shares(), Durations()) for _ in range(20)]
    assert first == second


def test_disposition_tag_respects_allowed_list() -> None:
    assert disposition_tag("busy", None) == "BUSY"
    assert disposition_tag("busy", ["BUSY", "OTHER"]) == "BUSY"
    assert disposition_tag("busy", ["OTHER"]) == "OTHER"


def test_no_fault_by_default() -> None:
    rng = random.Random(1)
    assert {create_fault(rng, Faults()) for _ in range(100)} == {None}
    assert not any(webhook_lost(rng, Faults()) for _ in range(100))


@pytest.mark.parametrize(
    ("knob", "expected"),
    [("error_5xx_share", "5xx"), ("rate_limit_429_share", "429"), ("drop_share", "drop")],
)
def test_certain_fault_always_fires(knob: str, expected: str) -> None:
    faults = updated(Faults(), {knob: 1.0})
    rng = random.Random(1)
    assert {create_fault(rng, faults) for _ in range(50)} == {expected}


def test_fault_shares_are_reproducible() -> None:
    faults = Faults(error_5xx_share=0.3, drop_share=0.3)
    runs = [
        [create_fault(rng, faults) for _ in range(50)]
        for rng in (random.Random(4), random.Random(4))
    ]
    assert runs[0] == runs[1]
    assert {"5xx", "drop", None} <= set(runs[0])


@pytest.mark.parametrize(
    "changes",
    [
        {"nope": 1},
        {"drop_share": 1.5},
        {"latency_ms": -1},
        {"drop_share": "x"},
        {"drop_share": True},
    ],
)
def test_bad_fault_knobs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(FaultError):
        updated(Faults(), changes)


def test_updated_keeps_other_knobs() -> None:
    faults = updated(Faults(latency_ms=5), {"webhook_retries": 0})
    assert (faults.latency_ms, faults.webhook_retries) == (5, 0)


def test_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    body = encode({"call_id": "c", "metadata": {"ü": 1}})
    assert body == '{"call_id":"c","metadata":{"ü":1}}'.encode()
    assert sign("s", body) == hmac.new(b"s", body, hashlib.sha256).hexdigest()


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay_s(1.0, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay_s(1.0, 20) == 30.0
