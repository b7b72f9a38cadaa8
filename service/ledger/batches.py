"""Batch requests in the ledger: recipients written in chunks, canceled together, settled once."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import BatchAccepted, BatchCompleted, CallCanceled, CallRejected, Event
from service.ledger.announcements import event_ids, reannounce, to_json
from service.ledger.intake import Intake
from service.ledger.records import (
    BatchAcceptance,
    BatchCancel,
    CallToStop,
    NewBatch,
    NewCall,
    RejectedRecipient,
)
from service.ledger.states import TERMINAL, State
from service.ledger.tables import batches, requests

WRITE_CHUNK = 500  # recipients per transaction: a big batch never holds the write lock long
OPEN = "open"
COMPLETED = "completed"
_LIVE = (State.DIALING.value, State.QUEUED.value, State.UNKNOWN.value)
_TERMINAL = tuple(s.value for s in TERMINAL)


def batch_totals(by_state: dict[str, int]) -> dict[str, int]:
    """batch.completed's counts from the recipients' final states; they add up to the total."""
    counts = {
        "calls_successful": by_state.get(State.COMPLETED, 0),
        "calls_failed": by_state.get(State.FAILED, 0) + by_state.get(State.UNRESOLVED, 0),
        "calls_rejected": by_state.get(State.REJECTED, 0),
        "calls_canceled": by_state.get(State.CANCELED, 0),
        "calls_suppressed": by_state.get(State.SUPPRESSED, 0),
        "calls_expired": by_state.get(State.EXPIRED, 0),
    }
    return {"calls_total": sum(counts.values()), **counts}


class Batches(Intake):
    """Batch requests: accept, cancel, settle."""

    async def accept_batch(self, batch: NewBatch, now: datetime) -> BatchAcceptance:
        """Write every recipient (chunked transactions), then the batch row and batch.accepted.

        Idempotent: a batch already written is re-announced (duplicate=true) and nothing else
        is written; one interrupted half-way is completed by its redelivery.
        """
        if await self._batch_known(batch.batch_request_id):
            return await self._retrying(lambda conn: self._accepted(conn, batch, now))
        calls = sorted(batch.calls, key=lambda c: c.recipient_index or 0)
        for start in range(0, len(calls), WRITE_CHUNK):
            chunk = calls[start : start + WRITE_CHUNK]
            await self._retrying(functools.partial(self._accept_chunk, calls=chunk, now=now))
            await asyncio.sleep(0)  # let the loop breathe between chunks
        rejected = batch.rejected
        for start in range(0, len(rejected), WRITE_CHUNK):
            part = rejected[start : start + WRITE_CHUNK]
            await self._retrying(
                functools.partial(self._reject_recipients, batch=batch, rejected=part, now=now)
            )
            await asyncio.sleep(0)
        return await self._retrying(lambda conn: self._accepted(conn, batch, now))

    async def _accept_chunk(
        self, conn: AsyncConnection, *, calls: Sequence[NewCall], now: datetime
    ) -> None:
        await self._accept(conn, calls, now)

    async def _batch_known(self, batch_request_id: str) -> bool:
        async with self._read() as conn:
            found = await conn.scalar(
                select(batches.c.batch_request_id).where(
                    batches.c.batch_request_id == batch_request_id
                )
            )
        return found is not None

    async def _accepted(
        self, conn: AsyncConnection, batch: NewBatch, now: datetime
    ) -> BatchAcceptance:
        row = (
            await conn.execute(
                select(batches).where(batches.c.batch_request_id == batch.batch_request_id)
            )
        ).first()
        duplicate = row is not None
        if row is None:
            await conn.execute(insert(batches).values(**self._batch_row(batch, now)))
        ev = BatchAccepted(
            request_id=batch.batch_request_id,
            correlation_id=batch.correlation_id,
            batch_request_id=batch.batch_request_id,
            occurred_at=now,
            recipients=row.recipients if row is not None else batch.size,
            rejected=row.rejected if row is not None else len(batch.rejected),
            dispatch=row.dispatch if row is not None else batch.dispatch,
            test_mode=row.test_mode if row is not None else batch.test_mode,
            duplicate=duplicate,
        )
        await self._emit(conn, [(ev, batch.correlation_id, batch.reply_to)], now)
        return BatchAcceptance(duplicate, ev.recipients, ev.rejected)

    @staticmethod
    def _batch_row(batch: NewBatch, now: datetime) -> dict[str, Any]:
        return {
            "batch_request_id": batch.batch_request_id,
            "state": OPEN,
            "shape": batch.shape,
            "dispatch": batch.dispatch,
            "correlation_id": batch.correlation_id,
            "reply_to": batch.reply_to,
            "recipients": batch.size,
            "rejected": len(batch.rejected),
            "test_mode": batch.test_mode,
            "created_at": now,
            "updated_at": now,
        }

    async def _reject_recipients(
        self,
        conn: AsyncConnection,
        *,
        batch: NewBatch,
        rejected: Sequence[RejectedRecipient],
        now: datetime,
    ) -> None:
        existing = await self._existing(conn, [r.request_id for r in rejected])
        rows: list[dict[str, Any]] = []
        events: list[tuple[Event, str | None, str | None]] = []
        for recipient in rejected:
            known = existing.get(recipient.request_id)
            if known is not None:
                again = reannounce(known, now)
                if again is not None:
                    events.append((again, batch.correlation_id, batch.reply_to))
                continue
            ev = CallRejected(
                request_id=recipient.request_id,
                correlation_id=batch.correlation_id,
                phone_number=recipient.phone_number,
                batch_request_id=batch.batch_request_id,
                recipient_index=recipient.index,
                occurred_at=now,
                reason="invalid_request",
                errors=recipient.errors,
            )
            rows.append(self._rejected_row(batch, recipient, ev, now))
            events.append((ev, batch.correlation_id, batch.reply_to))
        if rows:
            await conn.execute(insert(requests), rows)
        await self._emit(conn, events, now)

    @staticmethod
    def _rejected_row(
        batch: NewBatch, recipient: RejectedRecipient, ev: Event, now: datetime
    ) -> dict[str, Any]:
        return {
            "request_id": recipient.request_id,
            "kind": "call.create",
            "state": State.REJECTED.value,
            "correlation_id": batch.correlation_id,
            "reply_to": batch.reply_to,
            "phone_number": recipient.phone_number,
            "not_before": now,
            "batch_request_id": batch.batch_request_id,
            "recipient_index": recipient.index,
            "dispatch": batch.dispatch,
            "reason": "invalid_request",
            "errors": to_json(recipient.errors),
            "last_event_type": ev.event_type,
            "last_event": ev.model_dump_json(),
            "created_at": now,
            "updated_at": now,
        }

    # ------------------------------------------------------------ cancel

    async def cancel_batch(
        self, *, batch_request_id: str | None, bland_batch_id: str | None, now: datetime
    ) -> BatchCancel:
        """Cancel every recipient not dialed yet (call.canceled); mark live calls to be stopped."""
        return await self._retrying(
            lambda conn: self._cancel_batch(conn, batch_request_id, bland_batch_id, now)
        )

    async def _cancel_batch(
        self,
        conn: AsyncConnection,
        batch_request_id: str | None,
        bland_batch_id: str | None,
        now: datetime,
    ) -> BatchCancel:
        criterion = (
            batches.c.batch_request_id == batch_request_id
            if batch_request_id is not None
            else batches.c.bland_batch_ids.contains(f'"{bland_batch_id}"')
        )
        row = (await conn.execute(select(batches).where(criterion).with_for_update())).first()
        if row is None:
            return BatchCancel(found=False)
        brid = row.batch_request_id
        await conn.execute(
            update(batches)
            .where(batches.c.batch_request_id == brid, batches.c.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, updated_at=now)
        )
        canceled = await self._cancel_pending(conn, brid, now)
        to_stop = await self._mark_live(conn, brid, now)
        ids = json.loads(row.bland_batch_ids or "[]")
        return BatchCancel(True, canceled, to_stop, ids, brid)

    async def _cancel_pending(self, conn: AsyncConnection, brid: str, now: datetime) -> int:
        rows = (
            await conn.execute(
                select(requests)
                .where(requests.c.batch_request_id == brid, requests.c.state == State.PENDING)
                .with_for_update()
            )
        ).all()
        if not rows:
            return 0
        changes: list[dict[str, Any]] = []
        events: list[tuple[Event, str | None, str | None]] = []
        for row in rows:
            ev = CallCanceled(**event_ids(row, now), reason="requested")
            events.append((ev, row.correlation_id, row.reply_to))
            changes.append({"rid": row.request_id, "ev_type": ev.event_type, "ev": ev.model_dump_json()})  # fmt: skip
        await conn.execute(
            update(requests)
            .where(requests.c.request_id == bindparam("rid"), requests.c.state == State.PENDING)
            .values(
                state=State.CANCELED.value,
                reason="requested",
                updated_at=now,
                last_event_type=bindparam("ev_type"),
                last_event=bindparam("ev"),
            ),
            changes,
        )
        await self._emit(conn, events, now)
        return len(rows)

    async def _mark_live(self, conn: AsyncConnection, brid: str, now: datetime) -> list[CallToStop]:
        live = (requests.c.batch_request_id == brid, requests.c.state.in_(_LIVE))
        await conn.execute(
            update(requests)
            .where(*live, requests.c.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, updated_at=now)
        )
        rows = await conn.execute(
            select(requests.c.request_id, requests.c.call_id, requests.c.cancel_requested_at).where(
                *live, requests.c.call_id.is_not(None)
            )
        )
        return [CallToStop(r.request_id, r.call_id, r.cancel_requested_at) for r in rows]

    # ------------------------------------------------------------ settle

    async def settle_batches(self, now: datetime, limit: int = 100) -> list[str]:
        """batch.completed, once, for each open batch whose recipients are all final."""
        unfinished = exists().where(
            requests.c.batch_request_id == batches.c.batch_request_id,
            requests.c.state.not_in(_TERMINAL),
        )
        async with self._read() as conn:
            done = (
                (
                    await conn.execute(
                        select(batches.c.batch_request_id)
                        .where(batches.c.state == OPEN, ~unfinished)
                        .order_by(batches.c.updated_at)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        settled: list[str] = []
        for brid in done:
            if await self._retrying(functools.partial(self._settle, brid=brid, now=now)):
                settled.append(brid)
        return settled

    async def _settle(self, conn: AsyncConnection, *, brid: str, now: datetime) -> bool:
        row = (
            await conn.execute(
                select(batches).where(batches.c.batch_request_id == brid).with_for_update()
            )
        ).first()
        if row is None or row.state != OPEN:
            return False
        counted = await conn.execute(
            select(requests.c.state, func.count())
            .where(requests.c.batch_request_id == brid)
            .group_by(requests.c.state)
        )
        by_state = {state: int(n) for state, n in counted.all()}
        if any(state not in _TERMINAL for state in by_state):
            return False  # a recipient moved back (an unknown redialed) since the read
        ev = BatchCompleted(
            request_id=brid,
            correlation_id=row.correlation_id,
            batch_request_id=brid,
            occurred_at=now,
            canceled=row.cancel_requested_at is not None,
            **batch_totals(by_state),
        )
        await conn.execute(
            update(batches)
            .where(batches.c.batch_request_id == brid)
            .values(state=COMPLETED, completed_at=now, updated_at=now)
        )
        await self._emit(conn, [(ev, row.correlation_id, row.reply_to)], now)
        return True

    async def batch_state(self, batch_request_id: str) -> str | None:
        """open, completed, or None for a batch request not known."""
        async with self._read() as conn:
            state = await conn.scalar(
                select(batches.c.state).where(batches.c.batch_request_id == batch_request_id)
            )
        return None if state is None else str(state)


def recipient_request_id(batch_request_id: str, index: int) -> str:
    """A recipient's request id: stable across republishing of the same batch."""
    return f"{batch_request_id}:{index}"
