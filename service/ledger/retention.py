"""Retention: finished requests and sent events older than the window are forgotten, in chunks.

A purged request id is forgotten: a request published again with that id afterwards is a new
request. The retention window is therefore also the idempotency window (DIALER_RETENTION_DAYS).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select

from service.clock import Clock, utcnow
from service.ledger.base import LedgerBase
from service.ledger.states import TERMINAL
from service.ledger.tables import attempts, batches, outbox, requests
from service.metrics import Metrics
from service.periodic import Periodic
from service.settings import Settings

log = structlog.get_logger(__name__)

MAX_CHUNKS_PER_ROUND = 200  # a round stops after this many chunks; the next one goes on
# Between chunks: SQLite writers waiting on the lock poll for it, so give them a real gap.
CHUNK_PAUSE_S = 0.05


@dataclass(frozen=True)
class Purged:
    """What one purge transaction deleted."""

    requests: int
    events: int

    @property
    def total(self) -> int:
        """Rows deleted in all."""
        return self.requests + self.events


class Purging(LedgerBase):
    """The ledger's retention delete, one bounded chunk per transaction."""

    async def purge(self, *, before: datetime, limit: int = 500) -> Purged:
        """Delete at most `limit` finished requests and `limit` sent events older than `before`."""
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
            # A completed batch request is forgotten with its recipients (same window).
            done = (
                select(batches.c.batch_request_id)
                .where(batches.c.state == "completed", batches.c.updated_at < before)
                .limit(limit)
            )
            batch_ids = list((await conn.execute(done)).scalars())
            if batch_ids:
                await conn.execute(delete(batches).where(batches.c.batch_request_id.in_(batch_ids)))
            return Purged(len(ids), len(sent_ids))


class Retention(Periodic):
    """Purges the ledger every `retention_interval_s`, chunk by chunk, yielding between chunks."""

    def __init__(
        self, settings: Settings, ledger: Purging, metrics: Metrics, *, clock: Clock = utcnow
    ) -> None:
        super().__init__(
            "retention",
            interval_s=settings.retention_interval_s,
            failed_event="retention_round_failed",
            log=log,
        )
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.window = timedelta(days=settings.retention_days)
        self.chunk = settings.retention_chunk

    async def run_once(self) -> Purged:
        """Purge what is older than the window, in chunks, until nothing is left or stopping."""
        before = self.clock() - self.window
        deleted_requests = deleted_events = 0
        for _ in range(MAX_CHUNKS_PER_ROUND):
            if self._stopping.is_set():
                break
            purged = await self.ledger.purge(before=before, limit=self.chunk)
            deleted_requests += purged.requests
            deleted_events += purged.events
            if purged.requests < self.chunk and purged.events < self.chunk:
                break
            await asyncio.sleep(CHUNK_PAUSE_S)  # dials and intake take the write lock meanwhile
        self.metrics.purged.labels("requests").inc(deleted_requests)
        self.metrics.purged.labels("events").inc(deleted_events)
        if deleted_requests or deleted_events:
            log.info("ledger_purged", requests=deleted_requests, events=deleted_events)
        return Purged(deleted_requests, deleted_events)
