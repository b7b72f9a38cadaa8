"""The ledger on SQLite and PostgreSQL: transitions, events in the same transaction, limits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from schemas.envelope import DialerOptions
from schemas.events import Event, parse_event
from service.dialing.admission import admit, limits_for
from service.errors import StoreUnavailableError
from service.ledger import Claim, Ledger, NewCall, Outcome, Purged
from service.ledger.migrate import upgrade
from service.ledger.tables import attempts, outbox, requests, slots
from service.settings import Settings
from tests.support.ledger import claim as claim_round

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
OVERDUE_S = 120.0


def at(seconds: float) -> datetime:
    """T0 plus some seconds."""
    return T0 + timedelta(seconds=seconds)


def new_call(request_id: str, **options: Any) -> NewCall:
    """A valid call request with optional dialer options."""
    return NewCall(
        request_id=request_id,
        correlation_id=f"corr-{request_id}",
        reply_to="replies",
        phone_number="+15555550142",
        body={"phone_number": "+15555550142", "task": "Say hello."},
        options=DialerOptions(**options),
        publisher_webhook=None,
    )


async def open_ledger(url: str) -> Ledger:
    """A ledger on a migrated database."""
    settings = Settings(database_url=url, outcome_overdue_s=OVERDUE_S)
    await upgrade(settings)
    return await Ledger.open(settings)


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh, migrated database (SQLite and PostgreSQL)."""
    instance = await open_ledger(database_url)
    yield instance
    await instance.close()


async def claim(ledger: Ledger, now: datetime, **limits: Any) -> list[Claim]:
    """claim_due with generous limits unless the test sets them."""
    args: dict[str, Any] = {
        "owner": "test",
        "now": now,
        "limit": 100,
        "max_concurrent": 100,
        "max_per_second": 100.0,
        "slot_lease_s": 3600.0,
    }
    args.update(limits)
    return await claim_round(ledger, **args)


async def events(ledger: Ledger) -> list[Event]:
    """Every outbox event so far, oldest first, parsed with the published schema."""
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
    return [parse_event(row.event_type, row.body) for row in rows]


async def new_events(ledger: Ledger, seen: int) -> list[Event]:
    """Events written after the first `seen`."""
    return (await events(ledger))[seen:]


async def state(ledger: Ledger, request_id: str) -> str:
    """The request's state."""
    async with ledger.engine.connect() as conn:
        return str(
            await conn.scalar(select(requests.c.state).where(requests.c.request_id == request_id))
        )


async def slot_count(ledger: Ledger) -> int:
    """Slot rows present (expired or not)."""
    async with ledger.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(slots)) or 0)


async def queued(ledger: Ledger, request_id: str, call_id: str, now: datetime) -> Claim:
    """Accept, claim and record `call_id` for one request."""
    await ledger.accept_calls([new_call(request_id)], now)
    (one,) = await claim(ledger, now)
    assert (await ledger.record_queued(one, call_id, now)).recorded
    return one


# ------------------------------------------------------------------ accept


async def test_accept_writes_pending_rows_and_call_accepted(ledger: Ledger) -> None:
    result = await ledger.accept_calls(
        [new_call("r1"), new_call("r2", not_before=at(60), priority=9)], T0
    )
    assert [(a.request_id, a.state, a.duplicate) for a in result] == [
        ("r1", "pending", False),
        ("r2", "pending", False),
    ]
    accepted = await events(ledger)
    assert [(e.type, e.request_id, e.duplicate) for e in accepted] == [
        ("call.accepted", "r1", False),
        ("call.accepted", "r2", False),
    ]
    assert accepted[0].correlation_id == "corr-r1"
    assert accepted[0].phone_number == "+15555550142"
    assert accepted[1].model_dump()["not_before"] == at(60)
    assert await state(ledger, "r1") == "pending"


async def test_a_duplicate_changes_nothing_and_reannounces(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    again = await ledger.accept_calls([new_call("r1"), new_call("r3"), new_call("r3")], at(1))
    assert [(a.request_id, a.state, a.duplicate) for a in again] == [
        ("r1", "pending", True),
        ("r3", "pending", False),
        ("r3", "pending", True),
    ]
    written = await events(ledger)
    assert [(e.type, e.request_id, e.duplicate) for e in written] == [
        ("call.accepted", "r1", False),
        ("call.accepted", "r1", True),
        ("call.accepted", "r3", False),
        ("call.accepted", "r3", True),
    ]
    assert len({e.event_id for e in written}) == 4
    async with ledger.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(requests)) == 2


async def test_a_large_batch_is_accepted_in_one_call(ledger: Ledger) -> None:
    ids = [f"bulk-{i}" for i in range(1200)]
    result = await ledger.accept_calls([new_call(i) for i in ids], T0)
    assert [a.request_id for a in result] == ids
    assert not any(a.duplicate for a in result)
    again = await ledger.accept_calls([new_call(i) for i in ids[:700]], at(1))
    assert all(a.duplicate for a in again)
    counts = await ledger.counts(at(1))
    assert counts.by_state["pending"] == 1200
    assert counts.outbox_pending == 1900


async def test_duplicates_reannounce_the_current_states_event(ledger: Ledger) -> None:
    await queued(ledger, "q", "call-q", T0)
    await queued(ledger, "c", "call-c", T0)
    outcome = Outcome(call_id="call-c", status="completed", answered_by="human", completed=True)
    await ledger.record_outcome(outcome, at(5))
    await ledger.accept_calls([new_call("p")], T0)
    await ledger.cancel(request_id="p", call_id=None, correlation_id=None, reply_to=None, now=T0)
    seen = len(await events(ledger))
    result = await ledger.accept_calls([new_call("q"), new_call("c"), new_call("p")], at(10))
    assert [a.state for a in result] == ["queued", "completed", "canceled"]
    dup = await new_events(ledger, seen)
    assert [(e.type, e.duplicate) for e in dup] == [
        ("call.queued", True),
        ("call.completed", True),
        ("call.canceled", True),
    ]
    assert dup[0].call_id == "call-q"
    assert dup[1].model_dump()["answered_by"] == "human"
    assert all(e.occurred_at == at(10) for e in dup)


async def test_rejection_is_written_once_and_reannounced(ledger: Ledger) -> None:
    args: dict[str, Any] = {
        "request_id": "bad",
        "kind": "call.create",
        "correlation_id": "c",
        "reply_to": None,
        "reason": "invalid_request",
        "errors": ["Missing required parameter: phone_number."],
    }
    assert await ledger.record_rejection(**args, now=T0)
    assert not await ledger.record_rejection(**args, now=at(1))
    assert await state(ledger, "bad") == "rejected"
    result = await ledger.accept_calls([new_call("bad")], at(2))
    assert (result[0].state, result[0].duplicate) == ("rejected", True)
    written = await events(ledger)
    assert [(e.type, e.duplicate) for e in written] == [
        ("call.rejected", False),
        ("call.rejected", True),
        ("call.rejected", True),
    ]
    assert written[0].model_dump()["errors"] == ["Missing required parameter: phone_number."]
    assert await claim(ledger, at(3)) == []


async def test_batch_rejection_uses_the_batch_event(ledger: Ledger) -> None:
    assert await ledger.record_rejection(
        request_id="b",
        kind="batch.create",
        correlation_id=None,
        reply_to=None,
        reason="invalid_request",
        errors=["call_objects must be a non-empty array."],
        now=T0,
    )
    assert [e.type for e in await events(ledger)] == ["batch.rejected"]


# ------------------------------------------------------------------ claim


async def test_claim_takes_due_rows_by_priority_then_time(ledger: Ledger) -> None:
    await ledger.accept_calls(
        [
            new_call("low", priority=1),
            new_call("late", not_before=at(30)),
            new_call("high", priority=9),
            new_call("mid"),
        ],
        T0,
    )
    claims = await claim(ledger, at(1), limit=2)
    assert [c.request_id for c in claims] == ["high", "mid"]
    assert claims[0].attempt_no == 1
    assert claims[0].body == {"phone_number": "+15555550142", "task": "Say hello."}
    assert claims[0].started_at == at(1)
    assert [c.request_id for c in await claim(ledger, at(2))] == ["low"]
    assert await claim(ledger, at(29)) == []
    assert [c.request_id for c in await claim(ledger, at(30))] == ["late"]
    assert await state(ledger, "high") == "dialing"
    assert await slot_count(ledger) == 4
    async with ledger.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(attempts)) == 4


async def test_accept_and_claim_in_one_transaction(ledger: Ledger) -> None:
    limits = limits_for(
        owner="consumer", limit=10, max_concurrent=2, max_per_second=10.0, slot_lease_s=60.0
    )
    calls = [new_call("a"), new_call("b", priority=9), new_call("c", not_before=at(60))]
    accepted, claims, _ = await ledger.accept_and_claim(calls, T0, limits, admit)
    assert [(a.request_id, a.duplicate) for a in accepted] == [
        ("a", False),
        ("b", False),
        ("c", False),
    ]
    assert [c.request_id for c in claims] == ["b", "a"]
    assert [e.type for e in await events(ledger)] == ["call.accepted"] * 3
    again, more, _ = await ledger.accept_and_claim(calls[:1], at(1), limits, admit)
    assert (again[0].state, again[0].duplicate, more) == ("dialing", True, [])


async def test_claim_writes_no_event(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    seen = len(await events(ledger))
    assert len(await claim(ledger, T0)) == 1
    assert await new_events(ledger, seen) == []


async def test_claim_respects_max_concurrent(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call(f"r{i}") for i in range(5)], T0)
    assert len(await claim(ledger, at(0), max_concurrent=2)) == 2
    assert await claim(ledger, at(10), max_concurrent=2) == []
    counts = await ledger.counts(at(10))
    assert counts.active_slots == 2
    assert counts.by_state["pending"] == 3


async def test_claim_respects_the_rate_in_every_second(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call(f"r{i}") for i in range(10)], T0)
    assert len(await claim(ledger, at(0), max_per_second=3)) == 3
    assert await claim(ledger, at(0.5), max_per_second=3) == []
    assert await claim(ledger, at(0.999), max_per_second=3) == []
    assert len(await claim(ledger, at(1.0), max_per_second=3)) == 3


async def test_a_rate_below_one_spaces_calls(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call(f"r{i}") for i in range(3)], T0)
    assert len(await claim(ledger, at(0), max_per_second=0.5)) == 1
    assert await claim(ledger, at(1.5), max_per_second=0.5) == []
    assert len(await claim(ledger, at(2), max_per_second=0.5)) == 1


async def test_expired_rows_are_expired_not_claimed(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("old", expires_at=at(10)), new_call("ok")], T0)
    seen = len(await events(ledger))
    claims = await claim(ledger, at(10))
    assert [c.request_id for c in claims] == ["ok"]
    assert await state(ledger, "old") == "expired"
    (expired,) = await new_events(ledger, seen)
    assert (expired.type, expired.request_id) == ("call.expired", "old")
    assert expired.model_dump()["expires_at"] == at(10)


async def test_an_expired_slot_lease_frees_its_slot(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("a"), new_call("b")], T0)
    # Longer than a default 30-minute call plus its margin, so the configured lease applies.
    limits: dict[str, Any] = {"max_concurrent": 1, "slot_lease_s": 7200.0}
    assert [c.request_id for c in await claim(ledger, T0, **limits)] == ["a"]
    assert await claim(ledger, at(7199), **limits) == []
    assert [c.request_id for c in await claim(ledger, at(7200), **limits)] == ["b"]
    assert (await ledger.counts(at(7200))).active_slots == 1


async def test_two_claimers_never_share_a_row_nor_exceed_limits(database_url: str) -> None:
    first, second = await open_ledger(database_url), await open_ledger(database_url)
    try:
        await first.accept_calls([new_call(f"r{i:03}") for i in range(120)], T0)
        ticks = itertools.count()
        rate = 4

        async def worker(ledger: Ledger, owner: str) -> list[Claim]:
            taken: list[Claim] = []
            for _ in range(25):
                now = at(next(ticks) * 0.1)
                taken += await claim(
                    ledger,
                    owner=owner,
                    now=now,
                    limit=3,
                    max_concurrent=30,
                    max_per_second=rate,
                    slot_lease_s=3600,
                )
            return taken

        a, b = await asyncio.gather(worker(first, "a"), worker(second, "b"))
        ids = [c.request_id for c in a + b]
        assert len(ids) == len(set(ids))
        assert len(ids) == 20  # 50 ticks of 0.1 s = 5 s at 4 per second
        assert a
        assert b
        starts = sorted(c.started_at for c in a + b)
        for end in starts:
            in_window = [s for s in starts if end - timedelta(seconds=1) < s <= end]
            assert len(in_window) <= rate
        assert (await first.counts(at(10))).active_slots == 20
    finally:
        await first.close()
        await second.close()


async def test_two_claimers_never_exceed_the_concurrency(database_url: str) -> None:
    first, second = await open_ledger(database_url), await open_ledger(database_url)
    try:
        await first.accept_calls([new_call(f"r{i:03}") for i in range(60)], T0)

        async def worker(ledger: Ledger) -> list[Claim]:
            taken: list[Claim] = []
            for i in range(10):
                taken += await claim(ledger, at(i), limit=2, max_concurrent=7)
            return taken

        a, b = await asyncio.gather(worker(first), worker(second))
        ids = [c.request_id for c in a + b]
        assert len(ids) == len(set(ids)) == 7
    finally:
        await first.close()
        await second.close()


async def test_three_dispatchers_claiming_and_finishing_calls(database_url: str) -> None:
    """Claims, queued calls and outcomes interleave: each row dialed once, slots never exceeded."""
    ledgers = [await open_ledger(database_url) for _ in range(3)]
    max_concurrent = 5
    try:
        await ledgers[0].accept_calls([new_call(f"r{i:03}") for i in range(60)], T0)
        ticks = itertools.count()
        dialed: list[str] = []

        async def worker(ledger: Ledger, owner: str) -> None:
            for _ in range(200):
                now = at(next(ticks) * 0.01)
                claims = await claim(ledger, now, limit=2, max_concurrent=max_concurrent)
                assert (await ledger.counts(now)).active_slots <= max_concurrent
                for one in claims:
                    dialed.append(one.request_id)
                    call_id = f"call-{one.request_id}"
                    assert (await ledger.record_queued(one, call_id, now)).recorded
                    done = Outcome(call_id=call_id, status="completed", completed=True)
                    assert (await ledger.record_outcome(done, now)).changed
                if (await ledger.counts(now)).by_state["pending"] == 0:
                    return

        await asyncio.gather(*(worker(led, f"d{i}") for i, led in enumerate(ledgers)))
        assert sorted(dialed) == [f"r{i:03}" for i in range(60)]
        counts = await ledgers[0].counts(at(100))
        assert counts.by_state["completed"] == 60
        assert counts.active_slots == 0
    finally:
        for led in ledgers:
            await led.close()


async def test_two_consumers_accepting_the_same_ids_write_each_once(database_url: str) -> None:
    first, second = await open_ledger(database_url), await open_ledger(database_url)
    try:
        ids = [f"r{i:03}" for i in range(200)]
        a, b = await asyncio.gather(
            first.accept_calls([new_call(i) for i in ids], T0),
            second.accept_calls([new_call(i) for i in reversed(ids)], T0),
        )
        fresh = [x.request_id for x in a + b if not x.duplicate]
        assert sorted(fresh) == ids
        counts = await first.counts(T0)
        assert counts.by_state["pending"] == 200
        assert counts.outbox_pending == 400
    finally:
        await first.close()
        await second.close()


# ------------------------------------------------------------------ dial results


async def test_record_queued_then_outcome_completes_and_frees_the_slot(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    (one,) = await claim(ledger, T0)
    seen = len(await events(ledger))
    assert (await ledger.record_queued(one, "call-1", at(1))).recorded
    (q,) = await new_events(ledger, seen)
    assert (q.type, q.call_id, q.model_dump()["attempt"]) == ("call.queued", "call-1", 1)
    assert await state(ledger, "r1") == "queued"
    assert await slot_count(ledger) == 1
    outcome = Outcome(
        call_id="call-1",
        status="no-answer",
        answered_by="no-answer",
        call_length_min=0.5,
        duration_s=30,
        completed=True,
        source="poll",
        raw={"call_id": "call-1"},
    )
    result = await ledger.record_outcome(outcome, at(60))
    assert (result.found, result.changed, result.state, result.request_id) == (
        True,
        True,
        "completed",
        "r1",
    )
    done = (await new_events(ledger, seen))[-1]
    dumped = done.model_dump()
    assert (done.type, dumped["status"], dumped["source"]) == (
        "call.completed",
        "no-answer",
        "poll",
    )
    assert dumped["call_length_min"] == 0.5
    assert await slot_count(ledger) == 0
    written = len(await events(ledger))
    replay = await ledger.record_outcome(outcome, at(61))
    assert (replay.found, replay.changed, replay.state) == (True, False, "completed")
    assert len(await events(ledger)) == written


async def test_record_queued_is_refused_for_a_stale_claim(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    (one,) = await claim(ledger, T0)
    await ledger.record_retry(
        one, not_before=T0, throttled=True, error="429", now=T0, max_transient_retries=3
    )
    seen = len(await events(ledger))
    assert not (await ledger.record_queued(one, "call-x", at(1))).recorded
    assert await state(ledger, "r1") == "pending"
    assert await new_events(ledger, seen) == []


@pytest.mark.parametrize(
    ("status", "final", "event_type"),
    [
        ("failed", "failed", "call.failed"),
        ("canceled", "canceled", "call.canceled"),
        ("busy", "completed", "call.completed"),
    ],
)
async def test_outcome_status_picks_the_final_state(
    ledger: Ledger, status: str, final: str, event_type: str
) -> None:
    await queued(ledger, "r1", "call-1", T0)
    seen = len(await events(ledger))
    outcome = Outcome(call_id="call-1", status=status, error_message="x", completed=True)
    assert (await ledger.record_outcome(outcome, at(9))).state == final
    assert await state(ledger, "r1") == final
    assert [e.type for e in await new_events(ledger, seen)] == [event_type]


async def test_an_unfinished_or_unknown_call_changes_nothing(ledger: Ledger) -> None:
    await queued(ledger, "r1", "call-1", T0)
    seen = len(await events(ledger))
    live = await ledger.record_outcome(Outcome(call_id="call-1", status=None), at(5))
    assert (live.found, live.changed, live.state) == (True, False, "queued")
    ghost = await ledger.record_outcome(
        Outcome(call_id="nope", status="completed", completed=True), at(5)
    )
    assert (ghost.found, ghost.changed) == (False, False)
    assert await new_events(ledger, seen) == []
    assert await slot_count(ledger) == 1


async def test_an_outcome_settles_an_attempt_whose_call_id_was_never_recorded(
    ledger: Ledger,
) -> None:
    await ledger.accept_calls([new_call("lost"), new_call("racing")], T0)
    lost, racing = await claim(ledger, T0)
    await ledger.record_unknown(lost, error="read timeout", now=at(1))
    seen = len(await events(ledger))
    done = Outcome(call_id="call-lost", status="completed", completed=True)
    assert not (await ledger.record_outcome(done, at(60))).found  # no request id: no match
    result = await ledger.record_outcome(done, at(60), request_id="lost")
    assert (result.found, result.changed, result.state) == (True, True, "completed")
    # A webhook that overtakes the dispatcher's own record of the POST answer.
    early = Outcome(call_id="call-racing", status="busy", completed=True)
    assert (await ledger.record_outcome(early, at(61), request_id="racing")).changed
    assert not (await ledger.record_queued(racing, "call-racing", at(62))).recorded
    written = await new_events(ledger, seen)
    assert [(e.type, e.request_id, e.call_id) for e in written] == [
        ("call.queued", "lost", "call-lost"),
        ("call.completed", "lost", "call-lost"),
        ("call.queued", "racing", "call-racing"),
        ("call.completed", "racing", "call-racing"),
    ]
    assert written[0].model_dump()["reconciled"] is True
    assert await slot_count(ledger) == 0
    again = await ledger.record_outcome(done, at(70), request_id="lost")
    assert (again.found, again.changed) == (True, False)
    assert len(await events(ledger)) == seen + 4


async def test_dial_failed_fails_with_event_and_frees_the_slot(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    (one,) = await claim(ledger, T0)
    seen = len(await events(ledger))
    await ledger.record_dial_failed(
        one,
        http_status=400,
        message="Invalid parameters",
        errors=["Task must be a string."],
        now=T0,
    )
    (failed,) = await new_events(ledger, seen)
    dumped = failed.model_dump()
    assert (failed.type, dumped["stage"], dumped["http_status"]) == ("call.failed", "dial", 400)
    assert dumped["errors"] == ["Task must be a string."]
    assert await state(ledger, "r1") == "failed"
    assert await slot_count(ledger) == 0


async def test_throttled_retries_do_not_spend_the_budget(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    seen = len(await events(ledger))
    for i in range(5):
        (one,) = await claim(ledger, at(i))
        new_state = await ledger.record_retry(
            one,
            not_before=at(i + 1),
            throttled=True,
            error="429",
            now=at(i),
            max_transient_retries=1,
        )
        assert new_state == "pending"
        assert await slot_count(ledger) == 0
    assert await claim(ledger, at(4.5)) == []
    (one,) = await claim(ledger, at(5))
    assert one.attempt_no == 6
    assert (
        await ledger.record_retry(
            one,
            not_before=at(6),
            throttled=False,
            error="reset",
            now=at(5),
            max_transient_retries=1,
        )
        == "pending"
    )
    (one,) = await claim(ledger, at(6))
    assert (
        await ledger.record_retry(
            one,
            not_before=at(7),
            throttled=False,
            error="reset",
            now=at(6),
            max_transient_retries=1,
        )
        == "failed"
    )
    assert [e.type for e in await new_events(ledger, seen)] == ["call.failed"]
    assert await slot_count(ledger) == 0


async def test_unknown_keeps_the_slot_and_is_reconciled(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1"), new_call("r2")], T0)
    one, two = await claim(ledger, T0)
    seen = len(await events(ledger))
    await ledger.record_unknown(one, error="read timeout", now=at(1), check_after_s=30)
    await ledger.record_unknown(two, error="reset", now=at(1))
    assert await new_events(ledger, seen) == []
    assert await slot_count(ledger) == 2
    assert [u.request_id for u in await ledger.unknown_attempts(at(1), 10)] == ["r2"]
    due = await ledger.unknown_attempts(at(31), 10)
    assert [u.request_id for u in due] == ["r2", "r1"]
    assert due[1].attempt_id == one.attempt_id
    assert due[1].attempt_started_at == T0
    assert await claim(ledger, at(40)) == []  # never redialed

    assert await ledger.resolve_unknown("r1", "call-1", at(40))
    assert not await ledger.resolve_unknown("r1", "call-1", at(41))
    assert await ledger.mark_unresolved("r2", "no matching call at Bland", at(40))
    assert not await ledger.mark_unresolved("r2", "again", at(41))
    written = await new_events(ledger, seen)
    assert [e.type for e in written] == ["call.queued", "call.unresolved"]
    assert written[0].model_dump()["reconciled"] is True
    assert written[1].model_dump()["attempt_started_at"] == T0
    assert await slot_count(ledger) == 1
    assert await state(ledger, "r1") == "queued"


async def test_stale_dialing_rows_become_unknown_never_pending(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1"), new_call("r2")], T0)
    (one,) = await claim(ledger, T0, limit=1)
    (two,) = await claim(ledger, at(50), limit=1)
    seen = len(await events(ledger))
    assert await ledger.sweep_stale_dialing(at(60), stale_after_s=30) == 1
    assert await state(ledger, one.request_id) == "unknown"
    assert await state(ledger, two.request_id) == "dialing"
    assert await new_events(ledger, seen) == []
    assert await slot_count(ledger) == 2
    assert [u.request_id for u in await ledger.unknown_attempts(at(60), 10)] == [one.request_id]
    # The dispatcher that held the stale claim can no longer record a result for it.
    await ledger.record_dial_failed(one, http_status=400, message="x", errors=[], now=at(61))
    assert await state(ledger, one.request_id) == "unknown"


async def test_an_unknown_attempt_goes_back_to_pending_at_most_max_redials_times(
    ledger: Ledger,
) -> None:
    await ledger.accept_calls([new_call("r1"), new_call("r2")], T0)
    (first,) = await claim(ledger, T0, limit=1)  # its process dies: swept as orphaned
    (second,) = await claim(ledger, at(1), limit=1)  # its POST timed out: ambiguous
    await ledger.record_unknown(second, error="read timeout", now=at(2))
    assert await ledger.sweep_stale_dialing(at(60), stale_after_s=30) == 1
    seen = len(await events(ledger))

    # One rule for both: absent from Bland's list after the grace -> dialed again.
    assert await ledger.requeue_unknown(second.request_id, at(400), "absent", max_redials=1)
    assert await ledger.requeue_unknown(first.request_id, at(400), "absent", max_redials=1)

    assert await state(ledger, second.request_id) == "pending"
    assert await state(ledger, first.request_id) == "pending"
    assert await new_events(ledger, seen) == []
    assert await slot_count(ledger) == 0
    assert not await ledger.requeue_unknown(first.request_id, at(401), "again", max_redials=1)
    (again,) = await claim(ledger, at(402), limit=1)
    await ledger.record_unknown(again, error="read timeout", now=at(403))
    # Its second unknown attempt: the redials are spent.
    assert not await ledger.requeue_unknown(again.request_id, at(900), "absent", max_redials=1)
    assert await state(ledger, again.request_id) == "unknown"


async def test_cancel_by_state(ledger: Ledger) -> None:
    await queued(ledger, "q", "call-q", T0)
    await ledger.accept_calls([new_call("p"), new_call("d")], T0)
    (dialing,) = await claim(ledger, T0, limit=1)
    assert dialing.request_id == "d"
    seen = len(await events(ledger))
    pending_id = "p"

    def cancel(**ids: Any) -> Any:
        return ledger.cancel(correlation_id="cc", reply_to="canceller", now=at(1), **ids)

    done = await cancel(request_id=pending_id, call_id=None)
    assert (done.found, done.state, done.changed) == (True, "canceled", True)
    live = await cancel(request_id=None, call_id="call-q")
    assert (live.found, live.state, live.call_id, live.changed) == (True, "queued", "call-q", False)
    busy = await cancel(request_id=dialing.request_id, call_id=None)
    assert (busy.state, busy.call_id, busy.changed) == ("dialing", None, False)
    again = await cancel(request_id=pending_id, call_id=None)
    assert (again.state, again.changed) == ("canceled", False)
    missing = await cancel(request_id="nope", call_id=None)
    assert not missing.found
    (canceled,) = await new_events(ledger, seen)
    assert (canceled.type, canceled.request_id) == ("call.canceled", pending_id)
    async with ledger.engine.connect() as conn:
        row = (await conn.execute(select(outbox).order_by(outbox.c.id.desc()))).first()
    assert row is not None
    assert (row.correlation_id, row.reply_to) == ("cc", "canceller")
    # A stop requested at Bland comes back as canceled "requested".
    await ledger.record_outcome(Outcome(call_id="call-q", status="canceled", completed=True), at(2))
    assert (await events(ledger))[-1].model_dump()["reason"] == "requested"


# ------------------------------------------------------------------ polling, outbox, counts


async def test_overdue_calls_and_postponed_checks(ledger: Ledger) -> None:
    await queued(ledger, "r1", "call-1", T0)
    assert await ledger.overdue_calls(at(OVERDUE_S - 1), 10) == []
    (due,) = await ledger.overdue_calls(at(OVERDUE_S), 10)
    assert (due.request_id, due.call_id, due.outcome_due_at) == ("r1", "call-1", at(OVERDUE_S))
    await ledger.postpone_check("r1", at(OVERDUE_S + 15))
    assert await ledger.overdue_calls(at(OVERDUE_S + 14), 10) == []
    assert len(await ledger.overdue_calls(at(OVERDUE_S + 15), 10)) == 1
    await ledger.record_outcome(Outcome(call_id="call-1", status="completed", completed=True), T0)
    assert await ledger.overdue_calls(at(10_000), 10) == []


async def test_outbox_pending_and_mark_sent(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call(f"r{i}") for i in range(5)], T0)
    first = await ledger.pending_outbox(3)
    assert [r.request_id for r in first] == ["r0", "r1", "r2"]
    assert first[0].event_type == "call.accepted"
    assert first[0].reply_to == "replies"
    assert first[0].correlation_id == "corr-r0"
    assert parse_event(first[0].event_type, first[0].body).event_id == first[0].event_id
    await ledger.mark_sent([r.id for r in first], at(1))
    rest = await ledger.pending_outbox(10)
    assert [r.request_id for r in rest] == ["r3", "r4"]
    await ledger.mark_sent([r.id for r in rest], at(2))
    assert await ledger.pending_outbox(10) == []
    assert (await ledger.counts(at(2))).outbox_pending == 0


async def test_leased_outbox_rows_are_skipped_by_other_relays(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call(f"r{i}") for i in range(5)], T0)
    mine = await ledger.pending_outbox(3, owner="a", now=T0, lease_s=30)
    theirs = await ledger.pending_outbox(10, owner="b", now=at(1), lease_s=30)
    assert [r.request_id for r in mine] == ["r0", "r1", "r2"]
    assert [r.request_id for r in theirs] == ["r3", "r4"]
    assert await ledger.pending_outbox(10, owner="b", now=at(29)) == []
    await ledger.mark_sent([mine[0].id], at(2))
    # Relay "a" died: its unsent leases run out and another relay takes them.
    again = await ledger.pending_outbox(10, owner="b", now=at(30))
    assert [r.request_id for r in again] == ["r1", "r2"]
    assert len(await ledger.pending_outbox(10)) == 4  # the plain read ignores leases


async def test_purge_forgets_old_finished_requests_and_sent_events(ledger: Ledger) -> None:
    await queued(ledger, "done", "call-1", T0)
    await ledger.record_outcome(Outcome(call_id="call-1", status="busy", completed=True), at(5))
    await ledger.accept_calls([new_call("waiting")], T0)
    await ledger.mark_sent([r.id for r in await ledger.pending_outbox(2)], at(6))
    assert await ledger.purge(before=at(5)) == Purged(requests=0, events=0)
    assert await ledger.purge(before=at(7)) == Purged(requests=1, events=2)
    assert await state(ledger, "done") == "None"
    assert await state(ledger, "waiting") == "pending"
    assert len(await ledger.pending_outbox(10)) == 2


async def test_counts(ledger: Ledger) -> None:
    await ledger.ping()
    await ledger.accept_calls([new_call("a"), new_call("b"), new_call("c")], T0)
    await claim(ledger, T0, limit=1)
    counts = await ledger.counts(T0)
    assert counts.by_state["pending"] == 2
    assert counts.by_state["dialing"] == 1
    assert counts.by_state["completed"] == 0
    assert counts.active_slots == 1
    assert counts.outbox_pending == 3


# ------------------------------------------------------------------ one transaction


async def _break_outbox(ledger: Ledger) -> None:
    """Make every outbox insert fail, so a transition that writes an event must roll back."""
    async with ledger.engine.begin() as conn:
        if ledger.is_sqlite:
            await conn.execute(
                text(
                    "CREATE TRIGGER no_events BEFORE INSERT ON outbox "
                    "BEGIN SELECT RAISE(ABORT, 'outbox broken'); END"
                )
            )
            return
        await conn.execute(
            text(
                "CREATE FUNCTION no_events() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'outbox broken'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER no_events BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION no_events()"
            )
        )


async def test_a_transition_and_its_event_commit_together(ledger: Ledger) -> None:
    await ledger.accept_calls([new_call("r1")], T0)
    (one,) = await claim(ledger, T0)
    await _break_outbox(ledger)
    with pytest.raises(Exception, match="outbox broken"):
        await ledger.record_queued(one, "call-1", at(1))
    assert await state(ledger, "r1") == "dialing"
    with pytest.raises(Exception, match="outbox broken"):
        await ledger.accept_calls([new_call("r2")], at(1))
    assert await state(ledger, "r2") == "None"
    # Transitions without an event still work: the dialing row can become unknown.
    await ledger.record_unknown(one, error="timeout", now=at(2))
    assert await state(ledger, "r1") == "unknown"


async def test_every_state_change_has_its_event_and_no_other(ledger: Ledger) -> None:
    """Walk a request through each evented transition: one event per change, none otherwise."""
    await ledger.accept_calls([new_call("r1")], T0)
    steps: list[tuple[str, Any]] = []
    (one,) = await claim(ledger, T0)
    steps.append(("call.queued", ledger.record_queued(one, "call-1", at(1))))
    steps.append(("", ledger.record_queued(one, "call-1", at(1))))
    done = Outcome(call_id="call-1", status="completed", completed=True)
    steps.append(("call.completed", ledger.record_outcome(done, at(2))))
    steps.append(("", ledger.record_outcome(done, at(3))))
    steps.append(
        (
            "",
            ledger.cancel(
                request_id="r1", call_id=None, correlation_id=None, reply_to=None, now=at(4)
            ),
        )
    )
    for expected, step in steps:
        before = (len(await events(ledger)), await state(ledger, "r1"))
        await step
        after = (len(await events(ledger)), await state(ledger, "r1"))
        changed = before[1] != after[1]
        assert changed == bool(expected)
        assert after[0] - before[0] == (1 if expected else 0)
        if expected:
            assert (await events(ledger))[-1].type == expected


# ------------------------------------------------------------------ failures


async def test_an_unreachable_database_is_store_unavailable() -> None:
    ledger = await Ledger.open(
        Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await ledger.ping()
        with pytest.raises(StoreUnavailableError):
            await ledger.accept_calls([new_call("r1")], T0)
    finally:
        await ledger.close()


async def test_ping_says_when_the_schema_is_missing(database_url: str) -> None:
    ledger = await Ledger.open(Settings(database_url=database_url))
    try:
        with pytest.raises(StoreUnavailableError, match="dialer migrate"):
            await ledger.ping()
    finally:
        await ledger.close()


async def test_sqlite_runs_in_wal_with_foreign_keys(sqlite_url: str) -> None:
    ledger = await open_ledger(sqlite_url)
    try:
        async with ledger.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30_000
    finally:
        await ledger.close()


async def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(Exception, match="timezone-aware"):
        await ledger.accept_calls([new_call("r1")], datetime(2026, 1, 1))
