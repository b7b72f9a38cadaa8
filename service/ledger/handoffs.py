"""Recipients handed to Bland in its batches: queued without call ids until Bland reports them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import BatchFailed, BatchQueued, CallFailed, Event
from schemas.phone import PhoneNumberError, normalize_phone
from service.ledger.announcements import event_ids
from service.ledger.records import Claim
from service.ledger.states import State
from service.ledger.tables import attempts, batches, requests
from service.ledger.tracking import Tracking

# lease_owner of a recipient Bland holds in one of its batches: the stale-claim sweep skips it.
HANDOFF_OWNER = "bland-batch:"


class Handoffs(Tracking):
    """The `bland` dispatch mode's side of the ledger."""

    async def record_batch_queued(
        self, claims: Sequence[Claim], bland_batch_id: str, now: datetime, lookup_after_s: float
    ) -> bool:
        """Bland took these claims in one batch (+ batch.queued); True if a cancel came meanwhile."""
        async with self._write() as conn:
            per_batch = Counter(c.batch_request_id for c in claims if c.batch_request_id)
            for brid, count in per_batch.items():
                await self._announce_queued(conn, brid, bland_batch_id, count, now)
            # Webhooks may have given some rows their call ids already (a fast Bland).
            rows = await self._still_claimed(conn, claims)
            if not rows:
                return False
            ids = [row.request_id for row in rows]
            await conn.execute(
                update(requests)
                .where(requests.c.request_id.in_(ids))
                .values(
                    lease_owner=HANDOFF_OWNER + bland_batch_id,
                    lease_until=None,
                    next_check_at=now + timedelta(seconds=lookup_after_s),
                    updated_at=now,
                )
            )
            await conn.execute(
                update(attempts)
                .where(attempts.c.request_id.in_(ids), attempts.c.finished_at.is_(None))
                .values(result="batched", error=f"bland batch {bland_batch_id}")
            )
            return any(row.cancel_requested_at is not None for row in rows)

    async def _still_claimed(self, conn: AsyncConnection, claims: Sequence[Claim]) -> list[Any]:
        attempt_of = {c.request_id: c.attempt_no for c in claims}
        result = await conn.execute(
            select(requests).where(requests.c.request_id.in_(list(attempt_of))).with_for_update()
        )
        return [
            row
            for row in result
            if row.state == State.DIALING and row.attempts == attempt_of[row.request_id]
        ]

    async def _announce_queued(
        self, conn: AsyncConnection, brid: str, bland_batch_id: str, count: int, now: datetime
    ) -> None:
        batch = (
            await conn.execute(
                select(batches).where(batches.c.batch_request_id == brid).with_for_update()
            )
        ).first()
        if batch is None:
            return
        known = json.loads(batch.bland_batch_ids or "[]")
        await conn.execute(
            update(batches)
            .where(batches.c.batch_request_id == brid)
            .values(bland_batch_ids=json.dumps([*known, bland_batch_id]), updated_at=now)
        )
        ev = BatchQueued(
            request_id=brid,
            correlation_id=batch.correlation_id,
            batch_request_id=brid,
            batch_id=bland_batch_id,
            recipients=count,
            occurred_at=now,
        )
        await self._emit(conn, [(ev, batch.correlation_id, batch.reply_to)], now)

    async def record_batch_failed(
        self, batch_request_ids: Sequence[str], *, code: str | None, reason: str, now: datetime
    ) -> None:
        """batch.failed with Bland's reason, for each batch request whose recipients it held."""
        async with self._write() as conn:
            found = await conn.execute(
                select(batches).where(batches.c.batch_request_id.in_(list(batch_request_ids)))
            )
            events: list[tuple[Event, str | None, str | None]] = []
            for batch in found:
                ev = BatchFailed(
                    request_id=batch.batch_request_id,
                    correlation_id=batch.correlation_id,
                    batch_request_id=batch.batch_request_id,
                    code=code,
                    reason=reason[:1000],
                    occurred_at=now,
                )
                events.append((ev, batch.correlation_id, batch.reply_to))
            await self._emit(conn, events, now)

    async def handed_off(self, limit: int = 100) -> list[str]:
        """Bland batch ids still holding recipients whose call ids we do not know."""
        async with self._read() as conn:
            owners = await conn.execute(
                select(requests.c.lease_owner)
                .where(
                    requests.c.state == State.DIALING,
                    requests.c.lease_owner.startswith(HANDOFF_OWNER),
                )
                .distinct()
                .limit(limit)
            )
            return [str(owner)[len(HANDOFF_OWNER) :] for owner in owners.scalars()]

    async def adopt_call(self, request_id: str, call_id: str, now: datetime) -> bool:
        """A call Bland placed for a handed-off recipient: the row gets its id (+ call.queued)."""
        async with self._write() as conn:
            return await self._adopt_call(conn, request_id, call_id, now) is not None

    async def adopt_by_number(
        self, bland_batch_id: str, number: str, call_id: str, now: datetime
    ) -> bool:
        """A legacy batch's call, found by its number among the recipients Bland holds."""
        try:
            phone = normalize_phone(number)
        except PhoneNumberError:
            return False
        async with self._read() as conn:
            request_id = await conn.scalar(
                select(requests.c.request_id).where(
                    requests.c.lease_owner == HANDOFF_OWNER + bland_batch_id,
                    requests.c.phone_number == phone,
                    requests.c.state == State.DIALING,
                )
            )
        if request_id is None:
            return False
        return await self.adopt_call(str(request_id), call_id, now)

    async def overdue_handoffs(self, now: datetime) -> int:
        """Handed-off recipients Bland never reported: unknown outcome (the reconciler's rules)."""
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(requests)
                    .where(
                        requests.c.state == State.DIALING,
                        requests.c.lease_owner.startswith(HANDOFF_OWNER),
                        requests.c.next_check_at <= now,
                    )
                    .limit(500)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await self._move(
                    conn, row, State.UNKNOWN, now, None, next_check_at=now,
                    reason="handed to Bland in a batch; no call reported for it",
                )  # fmt: skip
            return len(rows)

    async def fail_handoffs(
        self, bland_batch_id: str, *, code: str | None, reason: str, now: datetime
    ) -> int:
        """Bland's batch failed before placing calls: its recipients without a call fail (+ events)."""
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(requests)
                    .where(
                        requests.c.state == State.DIALING,
                        requests.c.lease_owner == HANDOFF_OWNER + bland_batch_id,
                    )
                    .with_for_update()
                )
            ).all()
            for row in rows:
                ev = CallFailed(
                    **event_ids(row, now), stage="dial", error_message=reason[:1000],
                    errors=[reason[:1000]], source="webhook",
                )  # fmt: skip
                await self._move(conn, row, State.FAILED, now, ev, reason=reason[:255])
                await self._finish_attempt(conn, row.request_id, row.attempts, now, result="failed")
            brids = sorted({row.batch_request_id for row in rows if row.batch_request_id})
        if brids:
            await self.record_batch_failed(brids, code=code, reason=reason, now=now)
        return len(rows)
