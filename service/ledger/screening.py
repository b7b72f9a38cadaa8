"""The claim round's compliance step: facts per number, then the screen's verdicts applied."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.call import parse_start_time
from schemas.envelope import DialerOptions
from schemas.events import CallDeferred, CallSuppressed
from service.ledger.announcements import event_ids
from service.ledger.do_not_call import DoNotCall
from service.ledger.records import Candidate, NumberFacts, Screen, Screened
from service.ledger.states import State
from service.ledger.tables import attempts, do_not_call, requests

# Attempt results that placed no call: they count against neither a cap nor a number.
NOT_PLACED = ("throttled", "transient", "suppressed")
DAY = timedelta(hours=24)


def candidate_of(row: Any) -> Candidate:
    """The screen's view of a due row."""
    options = DialerOptions.model_validate_json(row.options) if row.options else DialerOptions()
    start = json.loads(row.body or "{}").get("start_time")
    starts_at = parse_start_time(start) if isinstance(start, str) else None
    return Candidate(row.request_id, row.phone_number, options, starts_at)


class Screening(DoNotCall):
    """Compliance at dial time, inside the claim round's transaction (under the admission lock)."""

    @staticmethod
    def _placed() -> ColumnElement[bool]:
        return or_(attempts.c.result.is_(None), attempts.c.result.not_in(NOT_PLACED))

    async def _screened(
        self, conn: AsyncConnection, rows: list[Any], now: datetime, wanted: int, screen: Screen
    ) -> tuple[list[Screened], list[Any]]:
        """The verdicts, applied (deferred, suppressed, held), and the rows that may go."""
        if not rows:
            return [], []
        facts = await self._facts(conn, sorted({r.phone_number for r in rows}), now)
        verdicts = screen([candidate_of(r) for r in rows], facts, now, wanted)
        by_id = {r.request_id: r for r in rows}
        going = []
        for v in verdicts:
            row = by_id[v.request_id]
            if v.verdict == "go":
                going.append(row)
            else:
                await self._apply(conn, row, v, now)
        return verdicts, going

    async def _facts(
        self, conn: AsyncConnection, phones: Sequence[str], now: datetime
    ) -> dict[str, NumberFacts]:
        listed_rows = await conn.execute(
            select(do_not_call.c.phone_number).where(do_not_call.c.phone_number.in_(phones))
        )
        listed = {r.phone_number for r in listed_rows}
        calls = await conn.execute(
            select(
                requests.c.phone_number,
                func.count(attempts.c.id).label("calls"),
                func.max(attempts.c.started_at).label("last"),
            )
            .select_from(attempts.join(requests, attempts.c.request_id == requests.c.request_id))
            .where(
                requests.c.phone_number.in_(phones),
                attempts.c.started_at > now - DAY,
                self._placed(),
            )
            .group_by(requests.c.phone_number)
        )
        counted = {r.phone_number: (int(r.calls), r.last) for r in calls}
        facts = {}
        for phone in phones:
            count, last = counted.get(phone, (0, None))
            facts[phone] = NumberFacts(phone in listed, count, last)
        return facts

    async def _apply(self, conn: AsyncConnection, row: Any, v: Screened, now: datetime) -> None:
        if v.verdict == "suppress":
            reason = v.reason or "compliance"
            ev = CallSuppressed(**event_ids(row, now), reason=reason, rule=v.rule)
            await self._move(conn, row, State.SUPPRESSED, now, ev, reason=reason)
            return
        assert v.not_before is not None  # noqa: S101 - defer and hold always say until when
        await conn.execute(
            update(requests)
            .where(requests.c.request_id == row.request_id)
            .values(not_before=v.not_before, updated_at=now)
        )
        if v.verdict == "defer":
            ev_d = CallDeferred(
                **event_ids(row, now), not_before=v.not_before, reason=v.reason or "", rule=v.rule
            )
            await self._emit(conn, [(ev_d, row.correlation_id, row.reply_to)], now)
