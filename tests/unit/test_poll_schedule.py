"""When the poller looks at a live call again, and when a finished call is settled from a poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.outcomes.payloads import parse_outcome
from service.outcomes.poller import next_look
from service.settings import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WITH_WEBHOOK = Settings(webhook_url="https://dialer.example/webhooks/bland")
WITHOUT_WEBHOOK = Settings()


def call(*, completed: bool, ended_s_ago: float = 0.0, **extra: Any) -> dict[str, Any]:
    """A call-details object as GET /v1/calls/{id} answers it."""
    end = NOW - timedelta(seconds=ended_s_ago)
    return {
        "call_id": "c-1",
        "completed": completed,
        "queue_status": "complete" if completed else "started",
        "status": "completed" if completed else None,
        "started_at": (end - timedelta(minutes=3)).isoformat(),
        "corrected_duration": "180",
        "end_at": (end + timedelta(hours=11)).isoformat(),  # the max_duration cut-off, later
        **extra,
    }


def look(details: dict[str, Any] | None, settings: Settings) -> datetime | None:
    outcome = parse_outcome(details, "poll") if details is not None else None
    return next_look(details, outcome, NOW, settings)


@pytest.mark.parametrize("settings", [WITH_WEBHOOK, WITHOUT_WEBHOOK])
def test_a_live_call_is_looked_at_again_after_the_poll_interval(settings: Settings) -> None:
    assert look(call(completed=False), settings) == NOW + timedelta(seconds=60)


def test_an_unreadable_call_is_looked_at_again_after_the_poll_interval() -> None:
    assert look(None, WITH_WEBHOOK) == NOW + timedelta(seconds=60)


def test_a_call_that_just_ended_waits_for_its_webhook_a_grace_after_the_end() -> None:
    assert look(call(completed=True, ended_s_ago=10), WITH_WEBHOOK) == NOW + timedelta(seconds=50)


def test_a_call_whose_webhook_had_its_grace_is_settled_from_the_poll() -> None:
    assert look(call(completed=True, ended_s_ago=61), WITH_WEBHOOK) is None


def test_without_our_webhook_a_finished_call_is_settled_at_once() -> None:
    assert look(call(completed=True, ended_s_ago=1), WITHOUT_WEBHOOK) is None


def test_a_finished_call_without_timestamps_counts_as_ending_now() -> None:
    bare = {"call_id": "c-1", "completed": True, "status": "completed"}
    assert look(bare, WITH_WEBHOOK) == NOW + timedelta(seconds=60)


@pytest.mark.parametrize("ended_at_s", [0, 59, 60, 3600, 11 * 3600])
def test_whatever_the_call_length_its_outcome_is_settled_within_two_minutes_of_its_end(
    ended_at_s: float,
) -> None:
    """Polls every minute from the queueing, a webhook that never comes: worst case."""
    queued = NOW
    polls = [queued + timedelta(seconds=60 * (i + 1)) for i in range(12 * 60 + 2)]
    end = queued + timedelta(seconds=ended_at_s)
    settled: datetime | None = None
    next_due = polls[0]
    for moment in polls:
        if moment < next_due:
            continue
        details = _as_seen_at(moment, end)
        outcome = parse_outcome(details, "poll")
        due = next_look(details, outcome, moment, WITH_WEBHOOK)
        if due is None:
            settled = moment
            break
        next_due = due
    assert settled is not None
    # The next poll round (DIALER_POLL_INTERVAL_S) picks a due call up: 5 s at most.
    assert (settled - end).total_seconds() + 5 <= 120


def _as_seen_at(moment: datetime, end: datetime) -> dict[str, Any]:
    if moment < end:
        return {"call_id": "c-1", "completed": False, "queue_status": "started"}
    return {
        "call_id": "c-1",
        "completed": True,
        "status": "completed",
        "started_at": (end - timedelta(seconds=30)).isoformat(),
        "corrected_duration": "30",
    }
