"""Claiming due requests under the shared limits (concurrency slots, rate)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.call import parse_start_time
from schemas.events import CallExpired
from service.errors import StoreUnavailableError
from service.ledger.announcements import CHUNK, claim_from_row, event_ids
from service.ledger.intake import Intake
from service.ledger.records import (
    Accepted,
    Admission,
    Admit,
    Claim,
    Limits,
    NewCall,
    Screen,
    Usage,
)
from service.ledger.screening import Screening
from service.ledger.states import State
from service.ledger.tables import ADMISSION_ROW_ID, admission, attempts, requests, slots
from service.pacing import lowered, pace_at

# Bland's `max_duration` when a request does not set one, and the time a placed call may spend
# queued and ringing at Bland before its `max_duration` starts to run (plus clock skew).
DEFAULT_MAX_DURATION_MIN = 30
CALL_END_MARGIN_S = 3600.0
# A slot counts from its start; only a call scheduled later than this (Bland requires 5 min
# ahead) is left out, so that replicas' clocks a little apart still count every slot.
SCHEDULED_MARGIN_S = 120.0


def slot_lease_for(configured_s: float, max_duration_min: object) -> float:
    """How long a slot is held without an outcome: `configured_s`, or longer for a long call.

    A slot freed while Bland may still be running the call lets a new call past the
    concurrency cap, so the lease covers the call's `max_duration` (up to 12 h) plus a margin.
    """
    minutes = max_duration_min if isinstance(max_duration_min, int | float) else None
    if minutes is None or isinstance(minutes, bool) or not math.isfinite(minutes) or minutes <= 0:
        minutes = DEFAULT_MAX_DURATION_MIN
    return max(configured_s, float(minutes) * 60.0 + CALL_END_MARGIN_S)


def slot_start(now: datetime, start_time: object) -> datetime:
    """When a claim's slot starts: a call scheduled with `start_time` holds it from then."""
    if not isinstance(start_time, str):
        return now
    start = parse_start_time(start_time)
    return max(now, start) if start is not None else now


class Claims(Screening, Intake):
    """Due requests become dialing attempts, atomically and within the limits."""

    async def claim_due(
        self, now: datetime, limits: Limits, admit: Admit, screen: Screen | None = None
    ) -> tuple[list[Claim], Admission]:
        """Expire, admit by the limits, screen for compliance, claim due rows, atomically.

        Also says which limit held requests back and what compliance did (for the metrics).
        """
        if not await self._anything_due(now):
            return [], Admission(admitted=0, limited_by=None)
        async with self._write() as conn:
            return await self._claim(conn, now, limits, admit, screen)

    async def accept_and_claim(
        self,
        calls: Sequence[NewCall],
        now: datetime,
        limits: Limits,
        admit: Admit,
        screen: Screen | None = None,
    ) -> tuple[list[Accepted], list[Claim], Admission]:
        """accept_calls and claim_due in one transaction: one durable commit before the POST.

        The claims are the due rows by priority, which may include older requests.
        """

        async def work(conn: AsyncConnection) -> tuple[list[Accepted], list[Claim], Admission]:
            accepted = await self._accept(conn, calls, now)
            claims, admission = await self._claim(conn, now, limits, admit, screen)
            return accepted, claims, admission

        return await self._retrying(work)

    async def _claim(
        self,
        conn: AsyncConnection,
        now: datetime,
        limits: Limits,
        admit: Admit,
        screen: Screen | None,
    ) -> tuple[list[Claim], Admission]:
        await self._expire(conn, now)
        # The cross-replica mutex: counting and taking slots and rate budget is atomic.
        locked = await conn.execute(
            select(admission).where(admission.c.id == ADMISSION_ROW_ID).with_for_update()
        )
        gate = locked.first()
        if gate is None:
            raise StoreUnavailableError("the admission row is missing: run `dialer migrate`")
        pace = pace_at(gate.pace_factor, gate.pace_changed_at, now, self.settings.pace_recovery_s)
        if gate.paused_until is not None and gate.paused_until > now:
            return [], Admission(admitted=0, limited_by="bland_429", pace=pace)
        decision = replace(admit(await self._usage(conn, now, limits), limits), pace=pace)
        if decision.admitted == 0:
            return [], decision
        wanted = limits.limit if screen is not None else decision.admitted
        rows = await self._candidates(conn, now, max(wanted, decision.admitted))
        if screen is not None:
            screened, rows = await self._screened(conn, rows, now, decision.admitted, screen)
            decision = replace(decision, screened=tuple(screened))
        taken = rows[: decision.admitted]
        await self._advance_virtual_time(conn, taken)
        claims = await self._take(conn, limits.owner, now, taken, limits)
        return claims, decision

    async def note_throttled(self, now: datetime, pause_s: float) -> float:
        """Bland said "Rate limit exceeded": every replica pauses; a new episode lowers the pace.

        429s answering POSTs sent before the pause began belong to the same episode: they only
        extend the pause. Returns the pace now.
        """
        async with self._write() as conn:
            locked = await conn.execute(
                select(admission).where(admission.c.id == ADMISSION_ROW_ID).with_for_update()
            )
            gate = locked.first()
            if gate is None:
                raise StoreUnavailableError("the admission row is missing: run `dialer migrate`")
            pace = pace_at(
                gate.pace_factor, gate.pace_changed_at, now, self.settings.pace_recovery_s
            )
            values: dict[str, Any] = {"paused_until": now + timedelta(seconds=pause_s)}
            if gate.paused_until is not None and gate.paused_until > now:
                values["paused_until"] = max(gate.paused_until, values["paused_until"])
            else:
                pace = lowered(pace, self.settings.pace_floor)
                values.update(pace_factor=pace, pace_changed_at=now)
            await conn.execute(
                update(admission).where(admission.c.id == ADMISSION_ROW_ID).values(**values)
            )
            return pace

    async def _usage(self, conn: AsyncConnection, now: datetime, limits: Limits) -> Usage:
        await conn.execute(delete(slots).where(slots.c.lease_until <= now))
        active = await conn.scalar(
            select(func.count())
            .select_from(slots)
            .where(slots.c.acquired_at <= now + timedelta(seconds=SCHEDULED_MARGIN_S))
        )
        started = await conn.scalar(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.started_at > now - timedelta(seconds=limits.rate_window_s))
        )
        placed = [
            await self._placed_since(conn, now - timedelta(seconds=cap.window_s))
            for cap in limits.caps
        ]
        return Usage(
            due=await self._count_due(conn, now, limits.limit),
            active_slots=int(active or 0),
            started_in_window=int(started or 0),
            placed_in_caps=tuple(placed),
        )

    async def _placed_since(self, conn: AsyncConnection, since: datetime) -> int:
        """Calls placed (or possibly placed) since then: 429s and refused connects are not."""
        found = await conn.scalar(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.started_at > since, self._placed())
        )
        return int(found or 0)

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

    async def _candidates(self, conn: AsyncConnection, now: datetime, count: int) -> list[Any]:
        """Due rows in claim order, locked (other replicas skip them)."""
        result = await conn.execute(
            select(requests)
            .where(
                requests.c.state == State.PENDING,
                requests.c.not_before <= now,
                or_(requests.c.expires_at.is_(None), requests.c.expires_at > now),
            )
            .order_by(
                requests.c.priority.desc(),
                requests.c.fair_vt,
                requests.c.not_before,
                requests.c.created_at,
                requests.c.request_id,
            )
            .limit(count)
            .with_for_update(skip_locked=True)
        )
        return list(result.all())

    async def _take(
        self, conn: AsyncConnection, owner: str, now: datetime, rows: list[Row[Any]], limits: Limits
    ) -> list[Claim]:
        if not rows:
            return []
        ids = [row.request_id for row in rows]
        lease_until = now + timedelta(seconds=limits.slot_lease_s)
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
        await conn.execute(insert(slots), [self._slot(c, now, limits.slot_lease_s) for c in claims])
        return claims

    @staticmethod
    def _slot(claim: Claim, now: datetime, configured_s: float) -> dict[str, object]:
        """The claim's slot, leased at least as long as its call may run at Bland."""
        lease_s = slot_lease_for(configured_s, claim.body.get("max_duration"))
        start = slot_start(now, claim.body.get("start_time"))
        return {
            "request_id": claim.request_id,
            "acquired_at": start,
            "lease_until": start + timedelta(seconds=lease_s),
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
