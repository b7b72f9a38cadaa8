"""Group commits: dial results that arrive together share one transaction, each row checked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas.envelope import DialerOptions
from service.dialing.recorder import QueuedRecorder
from service.ledger import Ledger, NewCall
from tests.support.ledger import claim, events, row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def new_call(request_id: str) -> NewCall:
    """A valid call request."""
    return NewCall(
        request_id=request_id,
        correlation_id=None,
        reply_to=None,
        phone_number="+15555550142",
        body={"phone_number": "+15555550142", "task": "Say hello."},
        options=DialerOptions(),
        publisher_webhook=None,
    )


async def test_record_queued_many_checks_each_row(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1"), new_call("r2"), new_call("r3")], T0)
    one, two, three = sorted(await claim(ledger, now=T0), key=lambda c: c.request_id)
    # r2's claim went stale (throttled, back to pending) before its answer was recorded.
    await ledger.record_retry(
        two, not_before=T0, throttled=True, error="429", now=T0, max_transient_retries=3
    )
    later = T0 + timedelta(seconds=1)
    answers = [(three, "call-3"), (two, "call-2"), (one, "call-1"), (one, "call-1b")]
    results = await ledger.record_queued_many(answers, later)
    assert [r.recorded for r in results] == [True, False, True, False]
    assert (await row(ledger, "r1")).call_id == "call-1"
    assert (await row(ledger, "r2")).state == "pending"
    assert (await row(ledger, "r3")).state == "queued"
    assert [e.type for e in await events(ledger, "r3")] == ["call.accepted", "call.queued"]
    assert [e.type for e in await events(ledger, "r2")] == ["call.accepted"]


async def test_recorder_groups_answers_and_answers_each_caller(ledger: Ledger) -> None:
    ids = [f"r{i:02d}" for i in range(10)]
    await ledger.accept_calls([new_call(i) for i in ids], T0)
    claims = await claim(ledger, now=T0)
    recorder = QueuedRecorder(ledger, lambda: T0 + timedelta(seconds=1), max_group=4)
    results = await asyncio.gather(
        *(recorder.record(c, f"call-{c.request_id}") for c in claims),
        recorder.record(claims[0], "call-again"),  # the same claim answered twice: stale
    )
    assert [r.recorded for r in results] == [True] * 10 + [False]
    for request_id in ids:
        recorded = await row(ledger, request_id)
        assert (recorded.state, recorded.call_id) == ("queued", f"call-{request_id}")
