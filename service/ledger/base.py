"""The ledger's shared steps: transactions, locking, one transition with its event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar

from sqlalchemy import Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.events import CallQueued, Event
from service.errors import StoreUnavailableError
from service.ledger.announcements import chunks, event_ids, outbox_values
from service.ledger.engine import make_engine, mapped_errors
from service.ledger.records import Claim
from service.ledger.states import HOLDS_SLOT, State, check_transition
from service.ledger.tables import admission, attempts, outbox, requests, slots
from service.settings import Settings

_RETRIES = 3
_T = TypeVar("_T")


class LedgerBase:
    """Engine, transactions and the steps every transition shares."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    async def open(cls, settings: Settings) -> Self:
        """Create the engine and its pool (no migration: see service.ledger.migrate.upgrade)."""
        try:
            engine = make_engine(settings.database_dsn, pool_size=settings.database_pool_size)
        except OSError as exc:
            raise StoreUnavailableError(f"ledger unavailable: {exc}") from exc
        return cls(engine, settings)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with mapped_errors(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with mapped_errors(), self.engine.connect() as conn:
            await conn.execution_options(ledger_readonly=True)
            async with conn.begin():
                yield conn

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the database answers and has the ledger's schema."""
        async with self._read() as conn:
            await conn.execute(select(1))
            try:
                found = (await conn.execute(select(admission.c.id))).first()
            except DBAPIError as exc:  # reachable, but the tables are not there
                raise StoreUnavailableError(
                    f"ledger schema missing or unusable ({exc.orig}): run `dialer migrate`"
                ) from exc
        if found is None:
            raise StoreUnavailableError("the admission row is missing: run `dialer migrate`")

    async def _emit(
        self,
        conn: AsyncConnection,
        events: Sequence[tuple[Event, str | None, str | None]],
        now: datetime,
    ) -> None:
        """Insert events (with their reply correlation_id and reply_to) into the outbox."""
        if events:
            rows = [outbox_values(e, correlation_id=c, reply_to=r, now=now) for e, c, r in events]
            await conn.execute(insert(outbox), rows)

    async def _move(
        self,
        conn: AsyncConnection,
        row: Any,
        target: State,
        now: datetime,
        ev: Event | None,
        *,
        reply: tuple[str | None, str | None] | None = None,
        **values: Any,
    ) -> None:
        """Apply one allowed transition, record its event, release the slot when leaving one.

        `reply` overrides where the event is answered (correlation_id, reply_to): the request's.
        """
        check_transition(row.state, target)
        values.update(state=target.value, updated_at=now)
        if ev is not None:
            values.update(last_event_type=ev.event_type, last_event=ev.model_dump_json())
            correlation_id, reply_to = reply or (row.correlation_id, row.reply_to)
            await self._emit(conn, [(ev, correlation_id, reply_to)], now)
        await conn.execute(
            update(requests).where(requests.c.request_id == row.request_id).values(**values)
        )
        if target not in HOLDS_SLOT:
            await conn.execute(delete(slots).where(slots.c.request_id == row.request_id))

    async def _finish_attempt(
        self, conn: AsyncConnection, request_id: str, attempt_no: int, now: datetime, **values: Any
    ) -> None:
        await conn.execute(
            update(attempts)
            .where(attempts.c.request_id == request_id, attempts.c.attempt_no == attempt_no)
            .values(finished_at=now, **values)
        )

    async def _lock(self, conn: AsyncConnection, *criteria: Any) -> Row[Any] | None:
        result = await conn.execute(select(requests).where(*criteria).with_for_update())
        return result.first()

    async def _lock_ids(self, conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Row[Any]]:
        """Lock rows by request id, in key order (no deadlock between two such writers)."""
        found: dict[str, Row[Any]] = {}
        for chunk in chunks(sorted(set(ids))):
            result = await conn.execute(
                select(requests)
                .where(requests.c.request_id.in_(chunk))
                .order_by(requests.c.request_id)
                .with_for_update()
            )
            found.update((row.request_id, row) for row in result)
        return found

    async def _lock_claimed(self, conn: AsyncConnection, claim: Claim) -> Row[Any] | None:
        """The claimed row, if it is still in the claim's dialing attempt."""
        row = await self._lock(conn, requests.c.request_id == claim.request_id)
        if row is None or row.state != State.DIALING or row.attempts != claim.attempt_no:
            return None
        return row

    async def _existing(self, conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Row[Any]]:
        found: dict[str, Row[Any]] = {}
        for chunk in chunks(ids):
            result = await conn.execute(select(requests).where(requests.c.request_id.in_(chunk)))
            found.update((row.request_id, row) for row in result)
        return found

    async def _retrying(self, work: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run `work` in a write transaction, again if another replica inserted the same id."""
        for attempt in range(_RETRIES):
            try:
                async with self._write() as conn:
                    return await work(conn)
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _to_queued(
        self, conn: AsyncConnection, row: Any, call_id: str, now: datetime, *, reconciled: bool
    ) -> None:
        ev = CallQueued(
            **event_ids(row, now, call_id=call_id),
            attempt=max(1, row.attempts),
            reconciled=reconciled,
        )
        due = now + timedelta(seconds=self.settings.outcome_overdue_s)
        await self._move(
            conn,
            row,
            State.QUEUED,
            now,
            ev,
            call_id=call_id,
            outcome_due_at=due,
            next_check_at=due,
            lease_owner=None,
        )
        await self._finish_attempt(
            conn, row.request_id, row.attempts, now, result="queued", call_id=call_id
        )

    async def _to_queued_many(
        self, conn: AsyncConnection, answers: Sequence[tuple[Any, str]], now: datetime
    ) -> None:
        """`_to_queued` (not reconciled) for several rows: three statements, however many rows."""
        if not answers:
            return
        due = now + timedelta(seconds=self.settings.outcome_overdue_s)
        events: list[tuple[Event, str | None, str | None]] = []
        moves, finished = [], []
        for row, call_id in answers:
            check_transition(row.state, State.QUEUED)
            ev = CallQueued(
                **event_ids(row, now, call_id=call_id),
                attempt=max(1, row.attempts),
                reconciled=False,
            )
            events.append((ev, row.correlation_id, row.reply_to))
            moves.append(
                {"b_id": row.request_id, "b_call_id": call_id, "b_event": ev.model_dump_json()}
            )
            finished.append({"b_id": row.request_id, "b_no": row.attempts, "b_call_id": call_id})
        await self._emit(conn, events, now)
        for move in moves:
            move.update(b_now=now, b_due=due)
        await conn.execute(
            update(requests)
            .where(requests.c.request_id == bindparam("b_id"))
            .values(
                state=State.QUEUED.value,
                updated_at=bindparam("b_now"),
                last_event_type=CallQueued.event_type,
                last_event=bindparam("b_event"),
                call_id=bindparam("b_call_id"),
                outcome_due_at=bindparam("b_due"),
                next_check_at=bindparam("b_due"),
                lease_owner=None,
            ),
            moves,
        )
        for done in finished:
            done.update(b_now=now)
        await conn.execute(
            update(attempts)
            .where(attempts.c.request_id == bindparam("b_id"))
            .where(attempts.c.attempt_no == bindparam("b_no"))
            .values(
                finished_at=bindparam("b_now"), result="queued", call_id=bindparam("b_call_id")
            ),
            finished,
        )
