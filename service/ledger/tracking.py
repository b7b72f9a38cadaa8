"""Outcomes of placed calls and reconciliation of unknown attempts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CallCanceled, CallUnresolved
from service.ledger.announcements import CHUNK, event_ids, outcome_event, outcome_record
from service.ledger.base import LedgerBase
from service.ledger.records import (
    CallToStop,
    Outcome,
    OutcomeResult,
    Tracked,
    UnknownAttempt,
)
from service.ledger.states import State, classify_outcome
from service.ledger.tables import attempts, requests

# The attempt result of a claim whose process died before recording what its POST did, and
# of a POST that failed ambiguously (timeout after sending, reset, 5xx).
ORPHANED = "orphaned"
UNKNOWN_RESULT = "unknown"


class Tracking(LedgerBase):
    """Outcomes, overdue calls, unknown attempts."""

    async def record_outcome(
        self, outcome: Outcome, now: datetime, *, request_id: str | None = None
    ) -> OutcomeResult:
        """queued|unknown -> completed|failed|canceled (+ event), releasing the slot; idempotent.

        `request_id` (from the call's metadata) finds a call whose id the ledger does not know
        yet: an unknown attempt, or a dialing row whose POST answer is still in flight. It is
        announced as queued (reconciled) first, then settled.
        """
        async with self._write() as conn:
            return await self._record_outcome(conn, outcome, now, request_id)

    async def _record_outcome(
        self, conn: AsyncConnection, outcome: Outcome, now: datetime, request_id: str | None
    ) -> OutcomeResult:
        target = classify_outcome(outcome.status, outcome.completed, outcome.queue_status)
        row = await self._lock(conn, requests.c.call_id == outcome.call_id)
        if row is None and request_id is not None:
            row = await self._adopt_call(conn, request_id, outcome.call_id, now)
        if row is None:
            return OutcomeResult(found=False, changed=False)
        changed = target is not None and row.state in (State.QUEUED, State.UNKNOWN)
        if target is not None and changed:
            ev = outcome_event(target, row, outcome, now)
            await self._move(
                conn,
                row,
                target,
                now,
                ev,
                outcome=outcome_record(outcome),
                next_check_at=None,
                lease_until=None,
            )
        return OutcomeResult(
            found=True,
            changed=changed,
            state=target.value if target is not None and changed else row.state,
            request_id=row.request_id,
            correlation_id=row.correlation_id,
            publisher_webhook=row.publisher_webhook,
        )

    async def _adopt_call(
        self, conn: AsyncConnection, request_id: str, call_id: str, now: datetime
    ) -> Row[Any] | None:
        """Give a dialing or unknown row the call id Bland reported (+ call.queued).

        The lock waits for a dispatcher still committing this very call id (PostgreSQL, READ
        COMMITTED): the row then has it, and the outcome applies to it instead of being lost.
        """
        row = await self._lock(conn, requests.c.request_id == request_id)
        if row is None:
            return None
        if row.call_id is not None:
            return row if row.call_id == call_id else None
        if row.state not in (State.DIALING, State.UNKNOWN):
            return None
        # Early (the POST's answer is on its way) unless the attempt's outcome was unknown.
        reconciled = row.state == State.UNKNOWN
        await self._to_queued(conn, row, call_id, now, reconciled=reconciled)
        return await self._lock(conn, requests.c.request_id == request_id)

    async def overdue_calls(self, now: datetime, limit: int) -> list[Tracked]:
        """Queued calls whose next check (initially: the outcome deadline) has come."""
        async with self._read() as conn:
            result = await conn.execute(
                select(requests)
                .where(requests.c.state == State.QUEUED, requests.c.next_check_at <= now)
                .order_by(requests.c.next_check_at)
                .limit(limit)
            )
            return [
                Tracked(
                    request_id=r.request_id,
                    call_id=r.call_id,
                    phone_number=r.phone_number,
                    attempt_started_at=r.attempt_started_at,
                    outcome_due_at=r.outcome_due_at,
                    next_check_at=r.next_check_at,
                    correlation_id=r.correlation_id,
                    publisher_webhook=r.publisher_webhook,
                )
                for r in result
            ]

    async def postpone_check(self, request_id: str, next_check_at: datetime) -> None:
        """Look at a queued or unknown request again at `next_check_at`."""
        async with self._write() as conn:
            await conn.execute(
                update(requests)
                .where(
                    requests.c.request_id == request_id,
                    requests.c.state.in_([State.QUEUED.value, State.UNKNOWN.value]),
                )
                .values(next_check_at=next_check_at)
            )

    async def unknown_attempts(self, now: datetime, limit: int) -> list[UnknownAttempt]:
        """Unknown attempts whose next check has come, oldest first."""
        joined = requests.outerjoin(
            attempts,
            (attempts.c.request_id == requests.c.request_id)
            & (attempts.c.attempt_no == requests.c.attempts),
        )
        async with self._read() as conn:
            result = await conn.execute(
                select(
                    requests,
                    attempts.c.id.label("attempt_id"),
                    attempts.c.result.label("attempt_result"),
                )
                .select_from(joined)
                .where(requests.c.state == State.UNKNOWN, requests.c.next_check_at <= now)
                .order_by(requests.c.next_check_at)
                .limit(limit)
            )
            return [
                UnknownAttempt(
                    request_id=r.request_id,
                    attempt_id=r.attempt_id,
                    attempt_no=r.attempts,
                    phone_number=r.phone_number,
                    attempt_started_at=r.attempt_started_at,
                    next_check_at=r.next_check_at,
                    correlation_id=r.correlation_id,
                    batch_request_id=r.batch_request_id,
                    orphaned=r.attempt_result == ORPHANED,
                )
                for r in result
            ]

    async def resolve_unknown(self, request_id: str, call_id: str, now: datetime) -> bool:
        """unknown -> queued: reconciliation found the call (+ call.queued reconciled=true)."""
        async with self._write() as conn:
            row = await self._lock(conn, requests.c.request_id == request_id)
            if row is None or row.state != State.UNKNOWN:
                return False
            await self._to_queued(conn, row, call_id, now, reconciled=True)
            return True

    async def calls_to_stop(self, limit: int, *, request_id: str | None = None) -> list[CallToStop]:
        """Queued calls canceled by request whose stop Bland has not accepted yet, oldest first.

        The cancel may have come while the POST was in flight or its answer was unknown; this
        list is how the call still gets stopped once its id is known, after any crash.
        """
        criteria = [
            requests.c.state == State.QUEUED,
            requests.c.cancel_requested_at.is_not(None),
            requests.c.stop_sent_at.is_(None),
        ]
        if request_id is not None:
            criteria.append(requests.c.request_id == request_id)
        async with self._read() as conn:
            result = await conn.execute(
                select(requests.c.request_id, requests.c.call_id, requests.c.cancel_requested_at)
                .where(*criteria)
                .order_by(requests.c.cancel_requested_at)
                .limit(limit)
            )
            return [CallToStop(r.request_id, r.call_id, r.cancel_requested_at) for r in result]

    async def mark_stop_sent(self, request_id: str, now: datetime) -> None:
        """Bland accepted the stop of this request's call: calls_to_stop leaves it out."""
        async with self._write() as conn:
            await conn.execute(
                update(requests)
                .where(requests.c.request_id == request_id, requests.c.stop_sent_at.is_(None))
                .values(stop_sent_at=now)
            )

    async def mark_unresolved(self, request_id: str, reason: str, now: datetime) -> bool:
        """unknown -> unresolved (+ call.unresolved): never redialed; releases the slot."""
        async with self._write() as conn:
            row = await self._lock(conn, requests.c.request_id == request_id)
            if row is None or row.state != State.UNKNOWN:
                return False
            ev = CallUnresolved(
                **event_ids(row, now), attempt_started_at=row.attempt_started_at, reason=reason
            )
            await self._move(
                conn,
                row,
                State.UNRESOLVED,
                now,
                ev,
                reason=reason[:255],
                next_check_at=None,
                lease_until=None,
            )
            return True

    async def sweep_stale_dialing(self, now: datetime, stale_after_s: float) -> int:
        """dialing rows left by a dead process -> unknown (never back to pending: it may have dialed)."""
        cutoff = now - timedelta(seconds=stale_after_s)
        async with self._write() as conn:
            result = await conn.execute(
                select(requests)
                .where(
                    requests.c.state == State.DIALING,
                    or_(requests.c.attempt_started_at <= cutoff, requests.c.lease_until <= now),
                    # Handed to Bland in one of its batches: looked after by the batch rounds.
                    or_(
                        requests.c.lease_owner.is_(None),
                        ~requests.c.lease_owner.startswith("bland-batch:"),
                    ),
                )
                .limit(CHUNK)
                .with_for_update(skip_locked=True)
            )
            rows = result.all()
            for row in rows:
                await self._move(
                    conn,
                    row,
                    State.UNKNOWN,
                    now,
                    None,
                    next_check_at=now,
                    reason="stale dialing: the dialing process stopped before recording a result",
                )
                await self._finish_attempt(
                    conn, row.request_id, row.attempts, now, result=ORPHANED, error="stale"
                )
            return len(rows)

    async def requeue_unknown(
        self, request_id: str, now: datetime, reason: str, *, max_redials: int
    ) -> bool:
        """unknown -> pending: Bland's complete list, read after the grace, has no such call.

        At most `max_redials` times per request: the attempts whose outcome stayed unknown
        (an ambiguous POST failure, or a claim whose process died) are counted.
        """
        async with self._write() as conn:
            row = await self._lock(conn, requests.c.request_id == request_id)
            if row is None or row.state != State.UNKNOWN:
                return False
            unknown = await conn.scalar(
                select(func.count())
                .select_from(attempts)
                .where(
                    attempts.c.request_id == request_id,
                    attempts.c.result.in_([UNKNOWN_RESULT, ORPHANED]),
                )
            )
            if int(unknown or 0) > max_redials:
                return False
            if row.cancel_requested_at is not None:
                ev = CallCanceled(**event_ids(row, now), reason="requested")
                await self._move(conn, row, State.CANCELED, now, ev, next_check_at=None)
                return True
            await self._move(
                conn,
                row,
                State.PENDING,
                now,
                None,
                not_before=now,
                next_check_at=None,
                lease_owner=None,
                lease_until=None,
                reason=reason[:255],
            )
            return True
