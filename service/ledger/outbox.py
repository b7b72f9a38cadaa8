"""The outbox for the relay, retention and the gauges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update

from service.ledger.announcements import chunks, outbox_from_row
from service.ledger.base import LedgerBase
from service.ledger.records import LedgerCounts, OutboxRow
from service.states import TERMINAL, State
from service.tables import attempts, outbox, requests, slots


class OutboxStore(LedgerBase):
    """Unsent events, retention, counts."""

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

    async def purge(self, *, before: datetime, limit: int = 1000) -> tuple[int, int]:
        """Delete finished requests and sent events older than `before`: (requests, events).

        A purged request id is forgotten: the retention window of idempotency ends here.
        """
        terminal = [state.value for state in TERMINAL]
        async with self._write() as conn:
            old = (
                select(requests.c.request_id)
                .where(requests.c.state.in_(terminal), requests.c.updated_at < before)
                .limit(limit)
            )
            ids = list((await conn.execute(old)).scalars())
            if ids:
                await conn.execute(delete(attempts).where(attempts.c.request_id.in_(ids)))
                await conn.execute(delete(requests).where(requests.c.request_id.in_(ids)))
            sent = (
                select(outbox.c.id)
                .where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < before)
                .limit(limit)
            )
            sent_ids = list((await conn.execute(sent)).scalars())
            if sent_ids:
                await conn.execute(delete(outbox).where(outbox.c.id.in_(sent_ids)))
            return len(ids), len(sent_ids)

    async def counts(self, now: datetime) -> LedgerCounts:
        """Requests by state, unsent events and slots held (unexpired leases)."""
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
            states: Mapping[str, int] = {state: int(n) for state, n in by_state.all()}
            return LedgerCounts(
                by_state={s.value: int(states.get(s.value, 0)) for s in State},
                outbox_pending=int(pending or 0),
                active_slots=int(active or 0),
            )
