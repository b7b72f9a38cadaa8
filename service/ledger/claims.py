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
        due, expired = await self._anything_due(now)
        if not (due or expired):
            return [], Admission(admitted=0, limited_by=None)
        async with self._write() as conn:
            return await self._claim(conn, now, limits, admit, screen, expire=expired)

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
        *,
        expire: bool = True,
        singles_only: bool = False,
    ) -> tuple[list[Claim], Admission]:
        if expire:
            await self._expire(conn, now)
        # Locked before the admission row, so that the mutex is held for fewer statements;
        # other replicas skip these rows.
        rows = await self._candidates(conn, now, limits.limit)
        if not rows or (singles_only and any(r.dispatch == "bland" for r in rows)):
            # Nothing due, or recipients for Bland's batch API: those go many to a batch.
            return [], Admission(admitted=0, limited_by=None)
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
        usage = await self._usage(conn, now, limits, due=len(rows))
        decision = replace(admit(usage, limits), pace=pace)
        if decision.admitted == 0:
            return [], decision
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

    async def _usage(self, conn: AsyncConnection, now: datetime, limits: Limits, due: int) -> Usage:
        """Slots, starts in the rate window and calls in each cap's window: one statement."""

        def count(table: Any, *where: Any) -> Any:
            return select(func.count()).select_from(table).where(*where).scalar_subquery()

        active = count(
            slots,
            slots.c.lease_until > now,
            slots.c.acquired_at <= now + timedelta(seconds=SCHEDULED_MARGIN_S),
        )
        started = count(
            attempts, attempts.c.started_at > now - timedelta(seconds=limits.rate_window_s)
        )
        placed = [
            count(
                attempts,
                attempts.c.started_at > now - timedelta(seconds=cap.window_s),
                self._placed(),
            )
            for cap in limits.caps
        ]
        row = (await conn.execute(select(active, started, *placed))).one()
        return Usage(
            due=due,
            active_slots=int(row[0] or 0),
            started_in_window=int(row[1] or 0),
            placed_in_caps=tuple(int(n or 0) for n in row[2:]),
        )

    async def _anything_due(self, now: datetime) -> tuple[bool, bool]:
        """(anything due, anything expired): a cheap read, so idle polling takes no write lock."""
        pending = requests.c.state == State.PENDING
        async with self._read() as conn:
            due = select(requests.c.request_id).where(pending, requests.c.not_before <= now)
            expired = select(requests.c.request_id).where(pending, requests.c.expires_at <= now)
            row = (await conn.execute(select(due.exists(), expired.exists()))).one()
            return bool(row[0]), bool(row[1])

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
        # Slots whose lease ran out go too (the count above already ignores them).
        await conn.execute(
            delete(slots).where(or_(slots.c.request_id.in_(ids), slots.c.lease_until <= now))
        )
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
