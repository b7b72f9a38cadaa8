"""The dispatcher's side: what a dial attempt led to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CallCanceled, CallFailed
from service.ledger.announcements import event_ids, to_json
from service.ledger.base import LedgerBase
from service.ledger.records import CallToStop, Claim, Queued
from service.ledger.states import State
from service.ledger.tables import requests


class Attempts(LedgerBase):
    """Results of dial attempts."""

    async def record_queued(self, claim: Claim, call_id: str, now: datetime) -> Queued:
        """dialing -> queued with Bland's call_id (+ call.queued); falsy if the claim is stale.

        An `unknown` row of the same attempt is accepted too: the sweeper may have moved a slow
        dispatcher's row before its answer arrived. A cancel that came while the POST was in
        flight is returned as the stop to send, without another read.
        """
        return (await self.record_queued_many([(claim, call_id)], now))[0]

    async def record_queued_many(
        self, answers: Sequence[tuple[Claim, str]], now: datetime
    ) -> list[Queued]:
        """record_queued for answers that arrived together: one transaction, the same checks.

        Rows are locked in one statement in key order, so two such writers never deadlock.
        """
        if not answers:
            return []
        async with self._write() as conn:
            rows = await self._lock_ids(conn, [claim.request_id for claim, _ in answers])
            results, moving = [], []
            for claim, call_id in answers:
                row = rows.pop(claim.request_id, None)  # a second answer for it is stale
                result = _queued(row, claim, call_id)
                if result.recorded:
                    moving.append((row, call_id))
                results.append(result)
            await self._to_queued_many(conn, moving, now)
            return results

    async def record_dial_failed(
        self,
        claim: Claim,
        *,
        http_status: int | None,
        message: str,
        errors: list[str],
        now: datetime,
    ) -> None:
        """dialing -> failed (Bland refused the request) + call.failed; releases the slot."""
        async with self._write() as conn:
            row = await self._lock_claimed(conn, claim)
            if row is None:
                return
            ev = CallFailed(
                **event_ids(row, now),
                stage="dial",
                http_status=http_status,
                error_message=message,
                errors=errors,
            )
            await self._move(
                conn, row, State.FAILED, now, ev, reason=message[:255], errors=to_json(errors)
            )
            await self._finish_attempt(
                conn,
                claim.request_id,
                claim.attempt_no,
                now,
                result="failed",
                http_status=http_status,
                error=message,
            )

    async def record_retry(
        self,
        claim: Claim,
        *,
        not_before: datetime,
        throttled: bool,
        error: str,
        now: datetime,
        max_transient_retries: int,
    ) -> str:
        """dialing -> pending (nothing was sent), or failed beyond the retry budget; the new state.

        Throttling (429) never spends the budget. A request canceled during the POST is canceled
        (+ call.canceled) instead of pending. Returns the row's state when the claim is stale.
        """
        async with self._write() as conn:
            row = await self._lock_claimed(conn, claim)
            if row is None:
                current = await self._lock(conn, requests.c.request_id == claim.request_id)
                return current.state if current is not None else ""
            retries = row.transient_retries + (0 if throttled else 1)
            result = "throttled" if throttled else "transient"
            await self._finish_attempt(
                conn, claim.request_id, claim.attempt_no, now, result=result, error=error
            )
            if row.cancel_requested_at is not None:  # nothing was placed: never dial it again
                await self._cancel_undialed(conn, row, now)
                return State.CANCELED.value
            if retries > max_transient_retries:
                message = f"gave up after {retries} transient failures: {error}"
                ev = CallFailed(**event_ids(row, now), stage="dial", error_message=message)
                await self._move(
                    conn, row, State.FAILED, now, ev, transient_retries=retries, reason=error[:255]
                )
                return State.FAILED.value
            await self._move(
                conn,
                row,
                State.PENDING,
                now,
                None,
                transient_retries=retries,
                not_before=not_before,
                lease_owner=None,
                lease_until=None,
            )
            return State.PENDING.value

    async def record_unknown(
        self, claim: Claim, *, error: str, now: datetime, check_after_s: float = 0.0
    ) -> None:
        """dialing -> unknown: never redialed; keeps its slot; the reconciler checks it."""
        async with self._write() as conn:
            row = await self._lock(conn, requests.c.request_id == claim.request_id)
            if row is None or row.attempts != claim.attempt_no:
                return
            if row.state == State.UNKNOWN:
                # The sweep took this slow claim for an orphan, but its POST was sent: the
                # attempt must say so, or the reconciler may requeue (redial) it.
                await self._finish_attempt(
                    conn, claim.request_id, claim.attempt_no, now, result="unknown", error=error
                )
                return
            if row.state != State.DIALING:
                return
            await self._move(
                conn,
                row,
                State.UNKNOWN,
                now,
                None,
                next_check_at=now + timedelta(seconds=check_after_s),
                reason=error[:255],
            )
            await self._finish_attempt(
                conn, claim.request_id, claim.attempt_no, now, result="unknown", error=error
            )

    async def _cancel_undialed(
        self, conn: AsyncConnection, row: Any, now: datetime, **values: Any
    ) -> None:
        """dialing -> pending -> canceled (+ call.canceled "requested"): no call was placed."""
        await self._move(
            conn, row, State.PENDING, now, None, lease_owner=None, lease_until=None, **values
        )
        pending = await self._lock(conn, requests.c.request_id == row.request_id)
        ev = CallCanceled(**event_ids(pending, now), reason="requested")
        await self._move(conn, pending, State.CANCELED, now, ev, reason="requested")


def _queued(row: Any, claim: Claim, call_id: str) -> Queued:
    """Whether the answer still belongs to the row's attempt; a cancel during the POST owes a stop."""
    if row is None or row.attempts != claim.attempt_no or row.call_id is not None:
        return Queued(recorded=False)
    if row.state not in (State.DIALING, State.UNKNOWN):
        return Queued(recorded=False)
    canceled_at = row.cancel_requested_at
    if canceled_at is None or row.stop_sent_at is not None:
        return Queued(recorded=True)
    return Queued(recorded=True, stop=CallToStop(row.request_id, call_id, canceled_at))
