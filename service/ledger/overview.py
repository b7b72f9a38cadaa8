"""What `dialer status` reads: backlog by state, slots and recent dials, outbox lag, last errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from service.ledger.base import LedgerBase
from service.ledger.states import State
from service.ledger.tables import attempts, outbox, requests, slots

# States whose rows carry a reason worth showing an operator.
_ERROR_STATES = (State.FAILED, State.REJECTED, State.UNRESOLVED, State.SUPPRESSED, State.EXPIRED)


@dataclass(frozen=True)
class RecentError:
    """One request that ended badly, most recent first."""

    at: datetime
    request_id: str
    state: str
    reason: str | None
    errors: str | None


@dataclass(frozen=True)
class Overview:
    """A read-only picture of the ledger at `now`."""

    now: datetime
    by_state: dict[str, int]
    due: int  # pending and due now (the rest of pending waits for a time: a window, a retry)
    active_slots: int
    dials_last_s: int
    dials_last_min: int
    dials_last_hour: int
    dials_last_day: int
    outbox_pending: int
    oldest_unsent_at: datetime | None
    recent_errors: list[RecentError]

    @property
    def outbox_lag_s(self) -> float:
        """Age of the oldest event not yet confirmed by the broker (0 when none waits)."""
        if self.oldest_unsent_at is None:
            return 0.0
        return max(0.0, (self.now - self.oldest_unsent_at).total_seconds())


class OverviewReader(LedgerBase):
    """Reads the overview in one read transaction; writes nothing."""

    async def overview(self, now: datetime, *, errors_limit: int = 5) -> Overview:
        """The backlog, the limits' usage, the outbox and the last errors."""
        async with self._read() as conn:
            by_state = {
                str(state): int(n)
                for state, n in await conn.execute(
                    select(requests.c.state, func.count()).group_by(requests.c.state)
                )
            }
            due = await conn.scalar(
                select(func.count()).where(
                    requests.c.state == State.PENDING.value, requests.c.not_before <= now
                )
            )
            active = await conn.scalar(
                select(func.count()).select_from(slots).where(slots.c.lease_until > now)
            )
            started = attempts.c.started_at
            last_s = await conn.scalar(
                select(func.count()).where(started > now - timedelta(seconds=1))
            )
            last_min, last_hour, last_day = [
                int(await conn.scalar(select(func.count()).where(started > now - window)) or 0)
                for window in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1))
            ]
            unsent = outbox.c.sent_at.is_(None)
            pending = await conn.scalar(select(func.count()).select_from(outbox).where(unsent))
            oldest = await conn.scalar(select(func.min(outbox.c.created_at)).where(unsent))
            errors = await conn.execute(
                select(
                    requests.c.updated_at,
                    requests.c.request_id,
                    requests.c.state,
                    requests.c.reason,
                    requests.c.errors,
                )
                .where(requests.c.state.in_([s.value for s in _ERROR_STATES]))
                .order_by(requests.c.updated_at.desc())
                .limit(errors_limit)
            )
            recent = [RecentError(*row) for row in errors]
        return Overview(
            now=now,
            by_state={s.value: by_state.get(s.value, 0) for s in State},
            due=int(due or 0),
            active_slots=int(active or 0),
            dials_last_s=int(last_s or 0),
            dials_last_min=last_min,
            dials_last_hour=last_hour,
            dials_last_day=last_day,
            outbox_pending=int(pending or 0),
            oldest_unsent_at=oldest,
            recent_errors=recent,
        )
