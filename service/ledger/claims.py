"""Claiming due requests under the shared limits (concurrency slots, rate)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CallExpired
from service.admission import Admission, admit, rate_window, slot_lease_for
from service.errors import StoreUnavailableError
from service.ledger.announcements import CHUNK, claim_from_row, event_ids
from service.ledger.intake import Intake
from service.ledger.records import Accepted, Claim, Limits, NewCall
from service.states import State
from service.tables import ADMISSION_ROW_ID, admission, attempts, requests, slots


class Claims(Intake):
    """Due requests become dialing attempts, atomically and within the limits."""

    async def claim_due(
        self,
        *,
        owner: str,
        now: datetime,
        limit: int,
        max_concurrent: int,
        max_per_second: float,
        slot_lease_s: float,
    ) -> list[Claim]:
        """Expire, admit by slots and rate, claim due rows (dialing + attempt + slot), atomically."""
        claims, _ = await self.claim_due_with_admission(
            owner=owner,
            now=now,
            limit=limit,
            max_concurrent=max_concurrent,
            max_per_second=max_per_second,
            slot_lease_s=slot_lease_s,
        )
        return claims

    async def claim_due_with_admission(
        self,
        *,
        owner: str,
        now: datetime,
        limit: int,
        max_concurrent: int,
        max_per_second: float,
        slot_lease_s: float,
    ) -> tuple[list[Claim], Admission]:
        """claim_due, also saying which limit held requests back (for the limit-wait metric)."""
        limits = Limits(owner, limit, max_concurrent, max_per_second, slot_lease_s)
        if not await self._anything_due(now):
            return [], Admission(admitted=0, limited_by=None)
        async with self._write() as conn:
            return await self._claim(conn, now, limits)

    async def accept_and_claim(
        self,
        calls: Sequence[NewCall],
        now: datetime,
        *,
        owner: str,
        limit: int,
        max_concurrent: int,
        max_per_second: float,
        slot_lease_s: float,
    ) -> tuple[list[Accepted], list[Claim]]:
        """accept_calls and claim_due in one transaction: one durable commit before the POST.

        The claims are the due rows by priority, which may include older requests.
        """
        limits = Limits(owner, limit, max_concurrent, max_per_second, slot_lease_s)

        async def work(conn: AsyncConnection) -> tuple[list[Accepted], list[Claim]]:
            accepted = await self._accept(conn, calls, now)
            claims, _ = await self._claim(conn, now, limits)
            return accepted, claims

        return await self._retrying(work)

    async def _claim(
        self, conn: AsyncConnection, now: datetime, limits: Limits
    ) -> tuple[list[Claim], Admission]:
        window = rate_window(limits.max_per_second)
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
            .where(attempts.c.started_at > now - timedelta(seconds=window.window_s))
        )
        decision = admit(
            wanted=await self._count_due(conn, now, limits.limit),
            active_slots=int(active or 0),
            max_concurrent=limits.max_concurrent,
            started_in_window=int(started or 0),
            window=window,
        )
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
