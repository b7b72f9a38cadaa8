"""A webhook that overtakes our own commit of its call id is applied, never dropped (PostgreSQL).

Finding 2 of issue 9: the dispatcher's transaction recording the call id was not committed
yet when Bland's webhook arrived; the webhook waited on the row lock, then found the row with
a call id and answered 200 `unknown_call` — Bland does not resend after a 2xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from service.ledger.tables import requests
from tests.support.ledger import claim as claim_round
from tests.support.ledger import events, row
from tests.support.rig import Rig, new_call, rig
from tests.support.sandbox import SandboxProcess

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

CALL_ID = "9d404c1b-6a23-4426-953a-a52c392ff8f1"


async def waiting_on_locks(r: Rig) -> int:
    """Backends of this database waiting for a lock."""
    async with r.ledger.engine.connect() as conn:
        query = text(
            "select count(*) from pg_stat_activity "
            "where datname = current_database() and wait_event_type = 'Lock'"
        )
        return int((await conn.execute(query)).scalar() or 0)


async def until_waiting(r: Rig, count: int, timeout_s: float = 20.0) -> None:
    """Until `count` transactions wait on a lock."""
    for _ in range(int(timeout_s / 0.02)):
        if await waiting_on_locks(r) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} transactions waiting on a lock")


async def test_a_webhook_overtaking_the_commit_of_its_call_id_is_applied(
    postgres_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(postgres_url, sandbox) as r:
        now = datetime.now(UTC)
        await r.ledger.accept_calls([new_call("req-race", "+14155550100")], now)
        (claim,) = await claim_round(r.ledger, now=now, limit=1)
        payload = {
            "call_id": CALL_ID,
            "completed": True,
            "queue_status": "complete",
            "status": "completed",
            "answered_by": "human",
            "metadata": {"dialer_request_id": "req-race"},
        }
        body = json.dumps(payload).encode()
        signature = hmac.new(sandbox.webhook_secret.encode(), body, hashlib.sha256).hexdigest()

        async with r.ledger.engine.connect() as blocker:
            # Something else holds the row: the dispatcher's write queues first, then the
            # webhook's; when the holder lets go, the call id commits just before the webhook.
            await blocker.begin()
            await blocker.execute(
                select(requests).where(requests.c.request_id == "req-race").with_for_update()
            )
            recording = asyncio.create_task(r.ledger.record_queued(claim, CALL_ID, now))
            await until_waiting(r, 1)
            webhook = asyncio.create_task(r.webhooks.handle(body, signature))
            await until_waiting(r, 2)
            await blocker.rollback()

        assert (await recording).recorded
        result = await webhook
        assert (result.result, result.http_status) == ("accepted", 200)
        found = await row(r.ledger, "req-race")
        assert (found.state, found.call_id) == ("completed", CALL_ID)
        written = [e.type for e in await events(r.ledger, "req-race")]
        assert written == ["call.accepted", "call.queued", "call.completed"]
