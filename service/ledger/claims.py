"""Claiming due requests under the shared limits (concurrency slots, rate)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CallExpired
from service.errors import StoreUnavailableError
from service.ledger.announcements import CHUNK, claim_from_row, event_ids
from service.ledger.intake import Intake
from service.ledger.records import Accepted, Admission, Admit, Claim, Limits, NewCall, Usage
from service.ledger.states import State
from service.ledger.tables import ADMISSION_ROW_ID, admission, attempts, requests, slots

# Bland's `max_duration` when a request does not set one, and the time a placed call may spend
# queued and ringing at Bland before its `max_duration` starts to run (plus clock skew).
DEFAULT_MAX_DURATION_MIN = 30
CALL_END_MARGIN_S = 3600.0


def slot_lease_for(configured_s: float, max_duration_min: object) -> float:
    """How long a slot is held without an outcome: `configured_s`, or longer for a long call.

    A slot freed while Bland may still be running the call lets a new call past the
    concurrency cap, so the lease covers the call's `max_duration` (up to 12 h) plus a margin.
    """
    minutes = max_duration_min if isinstance(max_duration_min, int | float) else None
    if minutes is None or isinstance(minutes, bool) or not math.isfinite(minutes) or minutes <= 0:
        minutes = DEFAULT_MAX_DURATION_MIN
    return max(configured_s, float(minutes) * 60.0 + CALL_END_MARGIN_S)


class Claims(Intake):
    """Due requests become dialing attempts, atomically and within the limits."""

    async def claim_due(
        self, now: datetime, limits: Limits, admit: Admit
    ) -> tuple[list[Claim], Admission]:
        """Expire, admit by slots and rate, claim due rows (dialing + attempt + slot), atomically.

        Also says which limit held requests back (for the limit-wait metric).
        """
        if not await self._anything_due(now):
            return [], Admission(admitted=0, limited_by=None)
        async with self._write() as conn:
            return await self._claim(conn, now, limits, admit)

    async def accept_and_claim(
        self, calls: Sequence[NewCall], now: datetime, limits: Limits, admit: Admit
    ) -> tuple[list[Accepted], list[Claim], Admission]:
        """accept_calls and claim_due in one transaction: one durable commit before the POST.

        The claims are the due rows by priority, which may include older requests.
        """

        async def work(conn: AsyncConnection) -> tuple[list[Accepted], list[Claim], Admission]:
            accepted = await self._accept(conn, calls, now)
            claims, admission = await self._claim(conn, now, limits, admit)
            return accepted, claims, admission

        return await self._retrying(work)

    async def _claim(
        self, conn: AsyncConnection, now: datetime, limits: Limits, admit: Admit
    ) -> tuple[list[Claim], Admission]:
        await self._expire(conn, now)
        # The cross-replica mutex: counting and taking slots and rate budget is atomic.
        locked = await conn.execute(
            select(admission.c.id).where(admission.c.id == ADMISSION_ROW_ID).with_for_update()
        )
        if locked.first() is None:
            raise StoreUnavailableError("the admission row is missing: run `dialer migrate`")
        await conn.execute(delete(slots).where(slots.c.lease_until <= now))
        active = await conn.scalar(select(func.count()).select_from(slots))
        started = await conn.scalar(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.started_at > now - timedelta(seconds=limits.rate_window_s))
        )
        usage = Usage(
            due=await self._count_due(conn, now, limits.limit),
            active_slots=int(active or 0),
            started_in_window=int(started or 0),
        )
        decision = admit(usage, limits)
        if decision.admitted == 0:
            return [], decision
        claims = await self._take(conn, limits.owner, now, decision.admitted, limits.slot_lease_s)
        return claims, decision

    async def _anything_due(self, now: datetime) -> bool:
        """A cheap read first, so that idle polling never takes the write lock."""
        pending = requests.c.state == State.PENDING
        async with self._read() as conn:
            due = select(requests.c.request_id).where(
                pending, or_(requests.c.not_before <= now, requests.c.expires_at <= now)
            )
            return bool(await conn.scalar(select(due.exists())))

    async def _count_due(self, conn: AsyncConnection, now: datetime, limit: int) -> int:
        due = (
            select(requests.c.request_id)
            .where(requests.c.state == State.PENDING, requests.c.not_before <= now)
            .limit(limit)
            .subquery()
        )
        return int(await conn.scalar(select(func.count()).select_from(due)) or 0)

    async def _take(
        self, conn: AsyncConnection, owner: str, now: datetime, count: int, slot_lease_s: float
    ) -> list[Claim]:
        result = await conn.execute(
            select(requests)
            .where(
                requests.c.state == State.PENDING,
                requests.c.not_before <= now,
                or_(requests.c.expires_at.is_(None), requests.c.expires_at > now),
            )
            .order_by(
                requests.c.priority.desc(),
                requests.c.not_before,
                requests.c.created_at,
                requests.c.request_id,
            )
            .limit(count)
            .with_for_update(skip_locked=True)
        )
        rows = result.all()
        if not rows:
            return []
        ids = [row.request_id for row in rows]
        lease_until = now + timedelta(seconds=slot_lease_s)
        await conn.execute(
            update(requests)
            .where(requests.c.request_id.in_(ids))
            .values(
                state=State.DIALING.value,
                attempts=requests.c.attempts + 1,
                attempt_started_at=now,
                next_check_at=None,
                lease_owner=owner,
                lease_until=lease_until,
                updated_at=now,
            )
        )
        inserted = await conn.execute(
            insert(attempts).returning(attempts.c.id, attempts.c.request_id),
            [
                {"request_id": row.request_id, "attempt_no": row.attempts + 1, "started_at": now}
                for row in rows
            ],
        )
        attempt_ids = {r.request_id: int(r.id) for r in inserted}
        claims = [claim_from_row(row, attempt_ids[row.request_id], now) for row in rows]
        await conn.execute(delete(slots).where(slots.c.request_id.in_(ids)))
        await conn.execute(insert(slots), [self._slot(c, now, slot_lease_s) for c in claims])
        return claims

    @staticmethod
    def _slot(claim: Claim, now: datetime, configured_s: float) -> dict[str, object]:
        """The claim's slot, leased at least as long as its call may run at Bland."""
        lease_s = slot_lease_for(configured_s, claim.body.get("max_duration"))
        return {
            "request_id": claim.request_id,
            "acquired_at": now,
            "lease_until": now + timedelta(seconds=lease_s),
        }

    async def _expire(self, conn: AsyncConnection, now: datetime) -> int:
        result = await conn.execute(
            select(requests)
            .where(requests.c.state == State.PENDING, requests.c.expires_at <= now)
            .limit(CHUNK)
            .with_for_update(skip_locked=True)
        )
        rows = result.all()
        for row in rows:
            ev = CallExpired(**event_ids(row, now), expires_at=row.expires_at)
            await self._move(conn, row, State.EXPIRED, now, ev, reason="expired")
        return len(rows)
