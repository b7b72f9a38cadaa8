"""The outbox for the relay, and the gauges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from service.ledger.announcements import chunks, outbox_from_row
from service.ledger.base import LedgerBase
from service.ledger.records import LedgerCounts, OutboxRow
from service.ledger.states import State
from service.ledger.tables import outbox, requests, slots


class OutboxStore(LedgerBase):
    """Unsent events, counts."""

    async def pending_outbox(
        self,
        limit: int,
        *,
        owner: str | None = None,
        now: datetime | None = None,
        lease_s: float = 30.0,
    ) -> list[OutboxRow]:
        """Unsent events, oldest first.

        With `owner` and `now`, the rows are leased for `lease_s` so that other replicas skip
        them (each event is then normally published once; a dead relay's lease runs out).
        """
        if owner is None or now is None:
            async with self._read() as conn:
                result = await conn.execute(
                    select(outbox)
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(limit)
                )
                return [outbox_from_row(r) for r in result]
        async with self._write() as conn:
            result = await conn.execute(
                select(outbox)
                .where(
                    outbox.c.sent_at.is_(None),
                    or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
                )
                .order_by(outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = [outbox_from_row(r) for r in result]
            if rows:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_([r.id for r in rows]))
                    .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
                )
            return rows

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        """Mark published events as sent."""
        if not ids:
            return
        async with self._write() as conn:
            for chunk in chunks(list(ids)):
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(chunk), outbox.c.sent_at.is_(None))
                    .values(sent_at=now)
                )

    async def counts(self, now: datetime) -> LedgerCounts:
        """Requests by state, due now, unsent events and slots held (unexpired leases)."""
        async with self._read() as conn:
            by_state = await conn.execute(
                select(requests.c.state, func.count()).group_by(requests.c.state)
            )
            pending = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            )
            active = await conn.scalar(
                select(func.count()).select_from(slots).where(slots.c.lease_until > now)
            )
            due = await conn.scalar(
                select(func.count())
                .select_from(requests)
                .where(requests.c.state == State.PENDING.value, requests.c.not_before <= now)
            )
            states: Mapping[str, int] = {state: int(n) for state, n in by_state.all()}
            return LedgerCounts(
                by_state={s.value: int(states.get(s.value, 0)) for s in State},
                outbox_pending=int(pending or 0),
                active_slots=int(active or 0),
                due=int(due or 0),
            )
