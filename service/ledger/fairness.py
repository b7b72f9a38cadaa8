"""Weighted fair share across campaigns: each new row's virtual time, and the claim order.

Start-time fair queueing: a campaign's k-th waiting row is due at virtual time
`max(global, campaign's last) + k / weight`; claims take the lowest virtual time first (within
a priority). The global virtual time is that of the last row claimed, so a campaign (or a
single call) arriving behind a 100,000-row backlog starts at the head, not at its tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger.base import LedgerBase
from service.ledger.records import NewCall
from service.ledger.states import State
from service.ledger.tables import ADMISSION_ROW_ID, admission, requests


def fair_key(call: NewCall) -> str:
    """The share a request belongs to: its campaign, its batch, or itself alone."""
    if call.options.campaign_id:
        return f"campaign:{call.options.campaign_id}"
    if call.batch_request_id:
        return f"batch:{call.batch_request_id}"
    return f"request:{call.request_id}"


def virtual_times(
    shares: Sequence[tuple[str, float]], last_by_key: dict[str, float], global_vt: float
) -> list[float]:
    """Pure: the virtual time of each new row (key, weight), in order."""
    last = dict(last_by_key)
    out = []
    for key, weight in shares:
        vt = max(global_vt, last.get(key, global_vt)) + 1.0 / weight
        last[key] = vt
        out.append(vt)
    return out


class Fairness(LedgerBase):
    """Virtual times written at intake, advanced at claim."""

    async def _fair_times(self, conn: AsyncConnection, calls: Sequence[NewCall]) -> list[float]:
        keys = sorted({fair_key(c) for c in calls})
        found = await conn.execute(
            select(requests.c.fair_key, func.max(requests.c.fair_vt).label("vt"))
            .where(requests.c.fair_key.in_(keys), requests.c.state == State.PENDING)
            .group_by(requests.c.fair_key)
        )
        last = {r.fair_key: float(r.vt) for r in found if r.vt is not None}
        global_vt = await conn.scalar(
            select(admission.c.virtual_time).where(admission.c.id == ADMISSION_ROW_ID)
        )
        shares = [(fair_key(c), float(c.options.campaign_weight)) for c in calls]
        return virtual_times(shares, last, float(global_vt or 0.0))

    async def _advance_virtual_time(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """The global virtual time moves to the latest row claimed (never back)."""
        if not rows:
            return
        latest = max(float(r.fair_vt or 0.0) for r in rows)
        await conn.execute(
            admission.update()
            .where(admission.c.id == ADMISSION_ROW_ID, admission.c.virtual_time < latest)
            .values(virtual_time=latest)
        )
