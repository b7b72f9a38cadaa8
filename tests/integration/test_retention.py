"""Retention: finished requests and sent events older than the window go, in chunks, while dialing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from service.ledger import Ledger
from service.ledger.tables import attempts, outbox, requests
from tests.support.rig import new_call, rig
from tests.support.sandbox import SandboxProcess

pytestmark = pytest.mark.integration

OLD = 600  # finished long ago: a dozen purge chunks
NEW = 40  # due now: dialed while the purge runs
CHUNK = 50


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset."""
    module_sandbox.reset()
    return module_sandbox


async def finish_long_ago(ledger: Ledger, prefix: str, count: int, when: datetime) -> None:
    """`count` requests accepted and canceled at `when`, their events published then."""
    calls = [new_call(f"{prefix}-{i}", f"+1415555{i:04d}") for i in range(count)]
    for start in range(0, count, 500):
        await ledger.accept_calls(calls[start : start + 500], when)
    for call in calls:
        await ledger.cancel(
            request_id=call.request_id, call_id=None, correlation_id=None, reply_to=None, now=when
        )
    while pending := await ledger.pending_outbox(1000):
        await ledger.mark_sent([row.id for row in pending], when)


async def count(ledger: Ledger, table: str, prefix: str) -> int:
    """Rows of `table` whose request id starts with `prefix`."""
    column = {"requests": requests.c.request_id, "outbox": outbox.c.request_id}[table]
    source = {"requests": requests, "outbox": outbox}[table]
    async with ledger.engine.connect() as conn:
        query = select(func.count()).select_from(source).where(column.like(f"{prefix}%"))
        return int(await conn.scalar(query) or 0)


async def test_old_finished_rows_are_purged_in_chunks_while_new_calls_are_dialed(
    database_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(
        database_url,
        sandbox,
        retention_days=30.0,
        retention_chunk=CHUNK,
        max_calls_per_second=1000.0,
        max_concurrent_calls=1000,
        dispatch_idle_s=0.02,
    ) as r:
        now = datetime.now(UTC)
        await finish_long_ago(r.ledger, "old", OLD, now - timedelta(days=40))
        await finish_long_ago(r.ledger, "recent", 3, now - timedelta(days=10))  # kept
        assert await count(r.ledger, "requests", "old-") == OLD
        await r.ledger.accept_calls(
            [new_call(f"new-{i}", f"+1212555{i:04d}") for i in range(NEW)], now
        )

        await r.dispatcher.start()
        purged = await r.retention.run_once()
        dialed_meanwhile = await dialed(r.ledger)
        await wait_dialed(r.ledger, NEW)

        assert dialed_meanwhile > 0  # the purge's chunks left the write lock to the dials
        assert (purged.requests, purged.events) == (OLD, 2 * OLD)
        assert await count(r.ledger, "requests", "old-") == 0
        assert await count(r.ledger, "outbox", "old-") == 0
        assert await count(r.ledger, "requests", "recent-") == 3
        assert await count(r.ledger, "outbox", "recent-") == 6
        assert await count(r.ledger, "requests", "new-") == NEW
        assert len(await sandbox.aground_truth()) == NEW
        async with r.ledger.engine.connect() as conn:
            orphans = (
                select(func.count())
                .select_from(attempts)
                .where(attempts.c.request_id.not_in(select(requests.c.request_id)))
            )
            assert await conn.scalar(orphans) == 0
        purged_metric = r.metrics.registry.get_sample_value(
            "dialer_purged_total", {"kind": "requests"}
        )
        assert purged_metric == OLD
        assert (await r.retention.run_once()).total == 0  # nothing left to purge


async def dialed(ledger: Ledger) -> int:
    """New requests with a call id (queued or further)."""
    async with ledger.engine.connect() as conn:
        done = await conn.scalar(
            select(func.count())
            .select_from(requests)
            .where(requests.c.request_id.like("new-%"), requests.c.call_id.is_not(None))
        )
    return int(done or 0)


async def wait_dialed(ledger: Ledger, expected: int, timeout_s: float = 60.0) -> None:
    """Until `expected` new requests are queued (or further)."""
    for _ in range(int(timeout_s / 0.05)):
        if await dialed(ledger) >= expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {expected} new requests dialed in {timeout_s} s")
