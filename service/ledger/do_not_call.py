"""The do-not-call list: add, remove, list, import; each bus request acknowledged by an event."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import DncUpdated
from service.ledger.base import LedgerBase
from service.ledger.tables import do_not_call

IMPORT_CHUNK = 500


@dataclass(frozen=True)
class DncSource:
    """Who asked (a `dnc.add` / `dnc.remove` request), for the `dnc.updated` event."""

    request_id: str
    correlation_id: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class DncEntry:
    """One listed number."""

    phone_number: str
    reason: str | None
    source: str | None
    added_at: datetime


class DoNotCall(LedgerBase):
    """The service's own do-not-call list (checked at dial time by the claim round)."""

    async def dnc_add(
        self,
        phone_number: str,
        *,
        reason: str | None,
        now: datetime,
        request: DncSource | None = None,
        source: str | None = None,
    ) -> bool:
        """List the number; True when it was not listed yet. A bus request gets `dnc.updated`."""
        async with self._write() as conn:
            listed = await self._listed(conn, phone_number)
            if not listed:
                await conn.execute(
                    insert(do_not_call).values(
                        phone_number=phone_number,
                        reason=(reason or "")[:255] or None,
                        source=(source or (request.request_id if request else None) or "")[:255]
                        or None,
                        added_at=now,
                    )
                )
            await self._ack(
                conn, request, phone_number=phone_number, action="add", listed=True,
                changed=not listed, reason=reason, now=now,
            )  # fmt: skip
            return not listed

    async def dnc_remove(
        self, phone_number: str, *, now: datetime, request: DncSource | None = None
    ) -> bool:
        """Take the number off the list; True when it was listed."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(do_not_call).where(do_not_call.c.phone_number == phone_number)
            )
            changed = bool(result.rowcount)
            await self._ack(
                conn, request, phone_number=phone_number, action="remove", listed=False,
                changed=changed, reason=None, now=now,
            )  # fmt: skip
            return changed

    async def dnc_import(
        self, entries: Iterable[tuple[str, str | None]], *, now: datetime, source: str
    ) -> int:
        """List many numbers (number, reason), in chunks; how many were new."""
        added = 0
        batch: dict[str, str | None] = {}
        for phone, reason in entries:
            batch[phone] = reason
            if len(batch) >= IMPORT_CHUNK:
                added += await self._import_chunk(batch, now, source)
                batch = {}
        if batch:
            added += await self._import_chunk(batch, now, source)
        return added

    async def dnc_list(self, *, after: str = "", limit: int = 1000) -> list[DncEntry]:
        """Listed numbers in number order, after `after` (for paging)."""
        async with self._read() as conn:
            result = await conn.execute(
                select(do_not_call)
                .where(do_not_call.c.phone_number > after)
                .order_by(do_not_call.c.phone_number)
                .limit(limit)
            )
            return [DncEntry(r.phone_number, r.reason, r.source, r.added_at) for r in result]

    async def _import_chunk(self, batch: dict[str, str | None], now: datetime, source: str) -> int:
        async with self._write() as conn:
            found = await conn.execute(
                select(do_not_call.c.phone_number).where(do_not_call.c.phone_number.in_(batch))
            )
            known = {r.phone_number for r in found}
            rows = [
                {"phone_number": p, "reason": (r or "")[:255] or None, "source": source,
                 "added_at": now}
                for p, r in sorted(batch.items()) if p not in known
            ]  # fmt: skip
            if rows:
                await conn.execute(insert(do_not_call), rows)
            return len(rows)

    async def _listed(self, conn: AsyncConnection, phone_number: str) -> bool:
        found = await conn.execute(
            select(do_not_call.c.phone_number)
            .where(do_not_call.c.phone_number == phone_number)
            .with_for_update()
        )
        return found.first() is not None

    async def _ack(
        self,
        conn: AsyncConnection,
        request: DncSource | None,
        *,
        phone_number: str,
        action: str,
        listed: bool,
        changed: bool,
        reason: str | None,
        now: datetime,
    ) -> None:
        if request is None:
            return
        ev = DncUpdated(
            request_id=request.request_id,
            correlation_id=request.correlation_id,
            occurred_at=now,
            phone_number=phone_number,
            action="add" if action == "add" else "remove",
            listed=listed,
            changed=changed,
            reason=reason,
        )
        await self._emit(conn, [(ev, request.correlation_id, request.reply_to)], now)
