"""The sandbox's call helpers: start_time parsing, the https rule, rendering, slots."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sandbox.calls import fill_template, parse_start_time, render, webhook_problem
from sandbox.outcomes import Durations, Shares, choose_outcome
from sandbox.state import SimCall, Slots

HTTPS = "webhook must be a string that starts with https://."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2026-01-01 12:00:00 -05:00",
            datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
        ),
        (
            "2026-01-01 12:00:00-05:00",
            datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("2026-01-01 12:00:00", datetime(2026, 1, 1, 12, tzinfo=UTC)),
        ("2026-01-01T12:00:00Z", datetime(2026, 1, 1, 12, tzinfo=UTC)),
        (
            "2026-01-01 12:00:00 +0130",
            datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(minutes=90))),
        ),
        ("tomorrow", None),
        (12, None),
        ("2026-13-01 12:00:00", None),
    ],
)
def test_parse_start_time(text: object, expected: datetime | None) -> None:
    assert parse_start_time(text) == expected


@pytest.mark.parametrize(
    ("url", "allow_http", "strict", "problem"),
    [
        (None, False, False, None),
        ("https://x.example/h", False, False, None),
        ("http://x.example/h", False, False, HTTPS),
        ("http://x.example/h", True, False, None),
        ("http://127.0.0.1:9/h", False, False, None),
        ("http://localhost/h", False, True, HTTPS),
        ("ftp://x.example/h", True, False, HTTPS),
        (42, True, False, HTTPS),
    ],
)
def test_webhook_https_rule(
    url: object, allow_http: bool, strict: bool, problem: str | None
) -> None:
    assert webhook_problem(url, allow_http=allow_http, strict=strict) == problem


def test_fill_template_replaces_known_placeholders_only() -> None:
    assert fill_template(
        "Hi {{name}}, {{ city }} {{missing}}", {"name": "Ann", "city": "Rome"}
    ) == ("Hi Ann, Rome {{missing}}")


def _call(**body: object) -> SimCall:
    shares = Shares(human=1, voicemail=0, no_answer=0, busy=0, failed=0)
    now = datetime(2026, 11, 24, 9, tzinfo=UTC)
    return SimCall(
        call_id="c1",
        phone_number="+14155550001",
        body=dict(body),
        outcome=choose_outcome(random.Random(1), shares, Durations()),
        created_at=now,
    )


def test_render_of_a_fresh_call() -> None:
    obj = render(_call(metadata={"a": 1}))
    assert obj["call_id"] == obj["c_id"] == "c1"
    assert obj["metadata"] == {"a": 1}
    assert obj["completed"] is False
    assert obj["queue_status"] == "new"
    assert obj["recording_url"] is None
    assert obj["call_length"] == 0
    assert obj["corrected_duration"] == "0"


def test_render_of_a_finished_recorded_call() -> None:
    call = _call(record=True)
    call.completed, call.final_kind, call.answered_by = True, "human", "human"
    call.started_at = call.created_at + timedelta(seconds=5)
    call.talk_s, call.status, call.queue_status = 45.0, "completed", "complete"
    obj = render(call)
    assert obj["corrected_duration"] == "45"
    assert obj["call_length"] == 0.75
    assert obj["recording_url"]
    assert obj["disposition_tag"] == "COMPLETED_ACTION"
    assert obj["transcripts"]
    assert "transcripts" not in render(call, transcripts=False)


async def test_slots_hand_over_in_order_and_track_the_high_water_mark() -> None:
    slots = Slots(cap=2)
    assert slots.try_acquire()
    assert slots.try_acquire()
    assert not slots.try_acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert order == [0, 1]
    assert slots.active == 2
    waiters[2].cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    slots.release()
    slots.release()
    assert slots.active == 0
    assert slots.max_active == 2


async def test_unlimited_slots_never_wait() -> None:
    slots = Slots(cap=None)
    for _ in range(100):
        await slots.acquire()
    assert slots.max_active == 100
