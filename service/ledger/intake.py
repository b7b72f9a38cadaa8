"""The consumer's side of the ledger: accept, reject, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import (
    BatchRejected,
    CallAccepted,
    CallCanceled,
    CallRejected,
    Event,
)
from service.ledger.announcements import event_ids, reannounce, to_json
from service.ledger.fairness import Fairness, fair_key
from service.ledger.records import Accepted, CancelResult, NewCall
from service.ledger.states import State
from service.ledger.tables import requests


class Intake(Fairness):
    """Requests coming in from the bus."""

    async def accept_calls(self, calls: Sequence[NewCall], now: datetime) -> list[Accepted]:
        """Write new requests as pending (+ call.accepted); re-announce duplicates, change nothing."""
        if not calls:
            return []
        return await self._retrying(lambda conn: self._accept(conn, calls, now))

    async def _accept(
        self, conn: AsyncConnection, calls: Sequence[NewCall], now: datetime
    ) -> list[Accepted]:
        existing = await self._existing(conn, list(dict.fromkeys(c.request_id for c in calls)))
        new_rows: list[dict[str, Any]] = []
        events: list[tuple[Event, str | None, str | None]] = []
        accepted_now: dict[str, CallAccepted] = {}
        results: list[Accepted] = []
        for call in calls:
            row = existing.get(call.request_id)
            if row is not None:
                again = reannounce(row, now)
                if again is not None:
                    events.append((again, call.correlation_id, call.reply_to))
                results.append(Accepted(call.request_id, row.state, duplicate=True))
                continue
            first = accepted_now.get(call.request_id)
            if first is not None:
                again = first.model_copy(update={"event_id": str(uuid.uuid4()), "duplicate": True})
                events.append((again, call.correlation_id, call.reply_to))
                results.append(Accepted(call.request_id, State.PENDING.value, duplicate=True))
                continue
            ev = CallAccepted(
                request_id=call.request_id,
                correlation_id=call.correlation_id,
                phone_number=call.phone_number,
                batch_request_id=call.batch_request_id,
                recipient_index=call.recipient_index,
                occurred_at=now,
                not_before=call.options.not_before,
                expires_at=call.options.expires_at,
            )
            accepted_now[call.request_id] = ev
            new_rows.append(self._new_row(call, ev, now))
            events.append((ev, call.correlation_id, call.reply_to))
            results.append(Accepted(call.request_id, State.PENDING.value, duplicate=False))
        if new_rows:
            await self._assign_fair_share(conn, calls, new_rows)
            # One key order for every writer: concurrent batches wait instead of deadlocking.
            new_rows.sort(key=lambda r: str(r["request_id"]))
            await conn.execute(insert(requests), new_rows)
        await self._emit(conn, events, now)
        return results

    async def _assign_fair_share(
        self, conn: AsyncConnection, calls: Sequence[NewCall], new_rows: list[dict[str, Any]]
    ) -> None:
        """Each new row's campaign key and virtual time (service.ledger.fairness)."""
        by_id = {c.request_id: c for c in calls}
        fresh = [by_id[str(r["request_id"])] for r in new_rows]
        for new_row, call, vt in zip(
            new_rows, fresh, await self._fair_times(conn, fresh), strict=True
        ):
            new_row.update(fair_key=fair_key(call), fair_vt=vt)

    @staticmethod
    def _new_row(call: NewCall, ev: Event, now: datetime) -> dict[str, Any]:
        return {
            "request_id": call.request_id,
            "kind": "call.create",
            "state": State.PENDING.value,
            "correlation_id": call.correlation_id,
            "reply_to": call.reply_to,
            "phone_number": call.phone_number,
            "body": to_json(call.body),
            "options": call.options.model_dump_json(exclude_defaults=True),
            "publisher_webhook": call.publisher_webhook,
            "priority": call.options.priority,
            "not_before": call.options.not_before or now,
            "expires_at": call.options.expires_at,
            "attempts": 0,
            "transient_retries": 0,
            "batch_request_id": call.batch_request_id,
            "recipient_index": call.recipient_index,
            "dispatch": call.dispatch,
            "last_event_type": ev.event_type,
            "last_event": ev.model_dump_json(),
            "created_at": now,
            "updated_at": now,
        }

    async def record_rejection(
        self,
        *,
        request_id: str,
        kind: str,
        correlation_id: str | None,
        reply_to: str | None,
        reason: str,
        errors: list[str],
        now: datetime,
    ) -> bool:
        """Write a terminal `rejected` row (+ its event); False for a known id (re-announced)."""
        return await self._retrying(
            lambda conn: self._reject(
                conn,
                request_id=request_id,
                kind=kind,
                correlation_id=correlation_id,
                reply_to=reply_to,
                reason=reason,
                errors=errors,
                now=now,
            )
        )

    async def _reject(
        self,
        conn: AsyncConnection,
        *,
        request_id: str,
        kind: str,
        correlation_id: str | None,
        reply_to: str | None,
        reason: str,
        errors: list[str],
        now: datetime,
    ) -> bool:
        row = (await self._existing(conn, [request_id])).get(request_id)
        if row is not None:
            again = reannounce(row, now)
            if again is not None:
                await self._emit(conn, [(again, correlation_id, reply_to)], now)
            return False
        common = {"request_id": request_id, "correlation_id": correlation_id, "occurred_at": now}
        ev: Event
        if kind.startswith("batch."):
            ev = BatchRejected(**common, reason=reason, errors=errors)
        else:
            ev = CallRejected(**common, reason=reason, errors=errors)
        await conn.execute(
            insert(requests).values(
                request_id=request_id,
                kind=kind[:32],
                state=State.REJECTED.value,
                correlation_id=correlation_id,
                reply_to=reply_to,
                not_before=now,
                reason=reason[:255],
                errors=to_json(errors),
                last_event_type=ev.event_type,
                last_event=ev.model_dump_json(),
                created_at=now,
                updated_at=now,
            )
        )
        await self._emit(conn, [(ev, correlation_id, reply_to)], now)
        return True

    async def cancel(
        self,
        *,
        request_id: str | None,
        call_id: str | None,
        correlation_id: str | None,
        reply_to: str | None,
        now: datetime,
    ) -> CancelResult:
        """pending -> canceled (+ call.canceled); dialing/queued/unknown: remembered until stopped."""
        if request_id is None and call_id is None:
            raise ValueError("cancel needs a request_id or a call_id")
        # Run again if a create of the same id committed meanwhile (the tombstone's insert).
        return await self._retrying(
            lambda conn: self._cancel(
                conn,
                request_id=request_id,
                call_id=call_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                now=now,
            )
        )

    async def _cancel(
        self,
        conn: AsyncConnection,
        *,
        request_id: str | None,
        call_id: str | None,
        correlation_id: str | None,
        reply_to: str | None,
        now: datetime,
    ) -> CancelResult:
        criterion = (
            requests.c.request_id == request_id
            if request_id is not None
            else requests.c.call_id == call_id
        )
        row = await self._lock(conn, criterion)
        if row is None:
            if request_id is not None:
                await self._tombstone(conn, request_id, now)
            return CancelResult(found=False, request_id=request_id, call_id=call_id)
        if row.state == State.PENDING:
            ev = CallCanceled(**event_ids(row, now), reason="requested")
            reply = (correlation_id or row.correlation_id, reply_to or row.reply_to)
            await self._move(conn, row, State.CANCELED, now, ev, reply=reply, reason="requested")
            return CancelResult(True, State.CANCELED.value, None, row.request_id, True)
        live = row.state in (State.DIALING, State.QUEUED, State.UNKNOWN)
        if live and row.cancel_requested_at is None:
            # Durable: once the call id is known, the call is stopped (calls_to_stop) and
            # its canceled outcome is reported as requested.
            await conn.execute(
                update(requests)
                .where(requests.c.request_id == row.request_id)
                .values(cancel_requested_at=now, updated_at=now)
            )
        return CancelResult(True, row.state, row.call_id, row.request_id, False)

    async def _tombstone(self, conn: AsyncConnection, request_id: str, now: datetime) -> None:
        """Keep a cancel of an id not seen yet: its create may come later (another replica, a
        redelivery) and must then be a duplicate of a canceled request, never dialed."""
        ev = CallCanceled(request_id=request_id, occurred_at=now, reason="requested")
        await conn.execute(
            insert(requests).values(
                request_id=request_id,
                kind="call.create",
                state=State.CANCELED.value,
                not_before=now,
                reason="canceled before it was accepted",
                cancel_requested_at=now,
                last_event_type=ev.event_type,
                last_event=ev.model_dump_json(),
                created_at=now,
                updated_at=now,
            )
        )
