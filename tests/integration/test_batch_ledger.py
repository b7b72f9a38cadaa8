"""Batch requests in the ledger: chunked intake, republishing, cancel, batch.completed totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from schemas.envelope import DialerOptions
from schemas.events import Event, parse_event
from service.ledger import Ledger, NewBatch, NewCall, Outcome, RejectedRecipient
from service.ledger.batches import WRITE_CHUNK, batch_totals
from service.ledger.tables import outbox, requests
from tests.support.ledger import claim

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def batch(brid: str, size: int, bad: set[int] = frozenset()) -> NewBatch:  # type: ignore[assignment]
    calls = [
        NewCall(
            request_id=f"{brid}:{i}",
            correlation_id="corr",
            reply_to=None,
            phone_number=f"+1415555{i:04d}",
            body={"phone_number": f"+1415555{i:04d}", "task": f"Hello {i}"},
            options=DialerOptions(),
            publisher_webhook=None,
            batch_request_id=brid,
            recipient_index=i,
        )
        for i in range(size)
        if i not in bad
    ]
    rejected = [
        RejectedRecipient(f"{brid}:{i}", i, None, [f"call_data[{i}]: bad"]) for i in sorted(bad)
    ]
    return NewBatch(brid, "corr", None, "legacy", "expand", False, calls, rejected)


async def all_events(ledger: Ledger) -> list[Event]:
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
    return [parse_event(r.event_type, r.body) for r in rows]


async def states(ledger: Ledger) -> dict[str, str]:
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(select(requests.c.request_id, requests.c.state))
        return {r.request_id: r.state for r in rows}


async def test_a_batch_is_one_row_per_recipient_and_republishing_writes_nothing(
    ledger: Ledger,
) -> None:
    size = WRITE_CHUNK * 2 + 7  # several chunks
    first = await ledger.accept_batch(batch("b1", size, {3, 700}), T0)
    again = await ledger.accept_batch(batch("b1", size, {3, 700}), at(1))

    assert (first.duplicate, first.recipients, first.rejected) == (False, size, 2)
    assert (again.duplicate, again.recipients, again.rejected) == (True, size, 2)
    found = await states(ledger)
    assert len(found) == size
    assert found["b1:3"] == found["b1:700"] == "rejected"
    assert found["b1:0"] == "pending"
    evs = await all_events(ledger)
    rejected = [e for e in evs if e.type == "call.rejected"]
    assert sorted(e.recipient_index or 0 for e in rejected) == [3, 700]
    assert {e.batch_request_id for e in rejected} == {"b1"}
    accepted = [e for e in evs if e.type == "call.accepted"]
    assert len(accepted) == size - 2
    assert {e.recipient_index for e in accepted} == set(range(size)) - {3, 700}
    batch_events = [e for e in evs if e.type == "batch.accepted"]
    assert [e.duplicate for e in batch_events] == [False, True]
    assert len(evs) == size + 2  # the republish added only its batch.accepted


async def test_an_interrupted_batch_is_completed_by_its_redelivery(ledger: Ledger) -> None:
    whole = batch("b2", 10)
    await ledger.accept_calls(whole.calls[:4], T0)  # as if the process died after one chunk

    result = await ledger.accept_batch(whole, at(1))

    assert not result.duplicate
    assert set((await states(ledger)).values()) == {"pending"}
    assert len(await states(ledger)) == 10


async def test_cancel_cancels_what_is_not_dialed_and_completed_adds_up(ledger: Ledger) -> None:
    await ledger.accept_batch(batch("b3", 6, {5}), T0)
    claims = await claim(
        ledger, owner="t", now=at(1), limit=2, max_concurrent=10, max_per_second=100.0,
        slot_lease_s=3600.0,
    )  # fmt: skip
    await ledger.record_queued(claims[0], "call-0", at(2))

    result = await ledger.cancel_batch(batch_request_id="b3", bland_batch_id=None, now=at(3))

    assert result.found
    assert result.canceled == 3
    assert [c.call_id for c in result.to_stop] == ["call-0"]
    assert await ledger.settle_batches(at(4)) == []  # two recipients are still live
    await ledger.record_outcome(
        Outcome(call_id="call-0", status="completed", completed=True), at(5)
    )
    await ledger.record_dial_failed(claims[1], http_status=400, message="no", errors=[], now=at(5))
    assert await ledger.settle_batches(at(6)) == ["b3"]
    assert await ledger.settle_batches(at(7)) == []  # once
    completed = [e for e in await all_events(ledger) if e.type == "batch.completed"]
    body: dict[str, Any] = completed[0].model_dump()
    assert body["calls_total"] == 6
    assert (body["calls_successful"], body["calls_failed"]) == (1, 1)
    assert (body["calls_rejected"], body["calls_canceled"], body["canceled"]) == (1, 3, True)
    canceled = [e for e in await all_events(ledger) if e.type == "call.canceled"]
    assert sorted(e.recipient_index or 0 for e in canceled) == [2, 3, 4]


async def test_cancel_of_an_unknown_batch_finds_nothing(ledger: Ledger) -> None:
    result = await ledger.cancel_batch(batch_request_id="nope", bland_batch_id=None, now=T0)
    assert not result.found


def test_totals_add_up() -> None:
    totals = batch_totals({"completed": 3, "failed": 1, "unresolved": 1, "rejected": 2})
    assert totals["calls_total"] == 7
    assert totals["calls_failed"] == 2


async def test_recipients_handed_to_a_bland_batch_are_adopted_or_failed(ledger: Ledger) -> None:
    await ledger.accept_batch(batch("b4", 3), T0)
    claims = await claim(ledger, now=at(1))
    assert await ledger.record_batch_queued(claims, "bb-1", at(2), lookup_after_s=60) is False
    assert await ledger.handed_off() == ["bb-1"]
    # The stale-claim sweep leaves them alone: Bland holds them.
    assert await ledger.sweep_stale_dialing(at(500), stale_after_s=10) == 0

    assert await ledger.adopt_call("b4:0", "call-0", at(3))
    assert await ledger.fail_handoffs("bb-1", code="source_invalid", reason="bad", now=at(4)) == 2
    await ledger.record_outcome(
        Outcome(call_id="call-0", status="completed", completed=True), at(5)
    )

    assert await ledger.settle_batches(at(6)) == ["b4"]
    evs = await all_events(ledger)
    queued = [e.model_dump() for e in evs if e.type == "batch.queued"]
    assert [(q["batch_id"], q["recipients"]) for q in queued] == [("bb-1", 3)]
    failed = [e.model_dump() for e in evs if e.type == "batch.failed"]
    assert [(f["code"], f["reason"]) for f in failed] == [("source_invalid", "bad")]
    done = next(e.model_dump() for e in evs if e.type == "batch.completed")
    assert (done["calls_successful"], done["calls_failed"]) == (1, 2)


async def test_handed_off_recipients_never_reported_become_unknown(ledger: Ledger) -> None:
    await ledger.accept_batch(batch("b5", 2), T0)
    claims = await claim(ledger, now=at(1))
    await ledger.record_batch_queued(claims, "bb-2", at(2), lookup_after_s=60)
    assert await ledger.overdue_handoffs(at(30)) == 0
    assert await ledger.overdue_handoffs(at(63)) == 2
    assert set((await states(ledger)).values()) == {"unknown"}
    assert len(await ledger.unknown_attempts(at(64), 10)) == 2


async def test_retention_forgets_a_completed_batch_with_its_recipients(ledger: Ledger) -> None:
    await ledger.accept_batch(batch("b6", 2, {0, 1}), T0)  # every recipient rejected: final
    assert await ledger.settle_batches(at(1)) == ["b6"]
    await ledger.purge(before=at(2))
    assert await ledger.batch_state("b6") is None
    assert await states(ledger) == {}
    again = await ledger.accept_batch(batch("b6", 2, {0, 1}), at(3))
    assert not again.duplicate  # a new request after the idempotency window
