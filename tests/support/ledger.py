"""Reading the ledger's tables directly, for assertions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from schemas.events import Event, parse_event
from service.dialing.admission import admit, limits_for
from service.ledger import Claim, Ledger
from service.ledger.tables import outbox, requests


async def row(ledger: Ledger, request_id: str) -> Any:
    """One request row."""
    async with ledger.engine.connect() as conn:
        result = await conn.execute(select(requests).where(requests.c.request_id == request_id))
        return result.one()


async def rows(ledger: Ledger) -> dict[str, Any]:
    """Every request row by id."""
    async with ledger.engine.connect() as conn:
        return {r.request_id: r for r in await conn.execute(select(requests))}


async def events(ledger: Ledger, request_id: str) -> list[Event]:
    """The events written for one request, in order."""
    async with ledger.engine.connect() as conn:
        result = await conn.execute(
            select(outbox.c.event_type, outbox.c.body)
            .where(outbox.c.request_id == request_id)
            .order_by(outbox.c.id)
        )
        return [parse_event(r.event_type, r.body) for r in result]


async def claim(
    ledger: Ledger,
    *,
    now: datetime,
    owner: str = "test",
    limit: int = 100,
    max_concurrent: int = 100,
    max_per_second: float = 100.0,
    slot_lease_s: float = 3600.0,
) -> list[Claim]:
    """One claim round under these limits (generous unless the test sets them)."""
    limits = limits_for(
        owner=owner,
        limit=limit,
        max_concurrent=max_concurrent,
        max_per_second=max_per_second,
        slot_lease_s=slot_lease_s,
    )
    claims, _ = await ledger.claim_due(now, limits, admit)
    return claims
