"""Review: a slow POST's unknown outcome follows the one rule; a call is found among many."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.ledger import Claim
from service.outcomes.reconciler import LIST_LIMIT
from tests.support.ledger import claim as claim_round
from tests.support.ledger import row
from tests.support.rig import Rig, new_call, rig
from tests.support.sandbox import SandboxFactory, SandboxProcess
from tests.support.tcpproxy import TcpProxy
from tests.support.waits import until

pytestmark = pytest.mark.integration

PHONE = "+14157880002"


async def posts_in_flight(sandbox: SandboxProcess, count: int) -> bool:
    """True when `count` POST /v1/calls are being answered by the sandbox."""
    return bool((await sandbox.acounts())["posts_in_flight"] == count)


async def answered_5xx(sandbox: SandboxProcess) -> bool:
    """True once the sandbox has answered a POST with an injected 5xx."""
    return any(a["outcome"] == "fault_5xx" for a in await sandbox.arequests())


async def claim_one(r: Rig, request_id: str, now: datetime) -> Claim:
    """Accept and claim one request, as the dispatcher does before its POST."""
    await r.ledger.accept_calls([new_call(request_id, PHONE)], now)
    (claim,) = await claim_round(
        r.ledger,
        owner="slow",
        now=now,
        limit=1,
        max_concurrent=10,
        max_per_second=10.0,
        slot_lease_s=3600.0,
    )
    return claim


async def test_a_slow_post_swept_as_orphan_then_ambiguous_is_redialed_only_when_absent(
    database_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(database_url, sandbox, reconcile_grace_s=200.0, retry_backoff_base_s=0.001) as r:
        now = datetime.now(UTC)
        claim = await claim_one(r, "req-slow", now)
        # The dispatcher is alive but its POST (or its ledger write) outlasts the threshold.
        r.reconciler.clock = lambda: now + timedelta(seconds=100)
        assert (await r.reconciler.run_once())["swept"] == 1
        # Then the POST ends in a 5xx: Bland may have placed the call.
        await sandbox.aset_faults(error_5xx_share=1.0)
        r.dispatcher.clock = lambda: now + timedelta(seconds=101)
        assert await r.dispatcher.dial(claim) == "unknown"
        await sandbox.aset_faults(error_5xx_share=0.0)

        r.reconciler.clock = lambda: now + timedelta(seconds=201)
        late = await r.reconciler.run_once()

        # The 5xx placed nothing: Bland's complete list shows no call, so it is dialed once.
        assert late.get("requeued") == 1
        r.dispatcher.clock = lambda: now + timedelta(seconds=202)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        [call] = await sandbox.aground_truth()
        found = await row(r.ledger, "req-slow")
        assert (found.state in {"queued", "completed"}, found.call_id) == (True, call["call_id"])


async def test_the_call_is_found_among_more_later_calls_than_one_page(
    sqlite_url: str, sandbox_factory: SandboxFactory
) -> None:
    sandbox = sandbox_factory(plan="enterprise", same_number_window_s=0, drop_share=1.0)
    async with rig(sqlite_url, sandbox, reconcile_grace_s=0.5, redial_unknown=False) as r:
        now = datetime.now(UTC)
        await r.ledger.accept_calls([new_call("req-busy-number", PHONE)], now)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        assert (await row(r.ledger, "req-busy-number")).state == "unknown"
        await sandbox.aset_faults(drop_share=0.0)
        # The number is called often afterwards (other requests, other services).
        async with httpx.AsyncClient(base_url=sandbox.base_url, headers=sandbox.headers) as http:
            for n in range(LIST_LIMIT + 5):
                body = {"phone_number": PHONE, "task": "t", "metadata": {"other": n}}
                (await http.post("/v1/calls", json=body)).raise_for_status()
        r.reconciler.clock = lambda: now + timedelta(seconds=1)

        results = await r.reconciler.run_once()

        mine = [
            c
            for c in await sandbox.aground_truth()
            if (c.get("metadata") or {}).get("dialer_request_id") == "req-busy-number"
        ]
        assert len(mine) == 1
        assert results.get("matched") == 1
        assert (await row(r.ledger, "req-busy-number")).call_id == mine[0]["call_id"]


async def test_an_ambiguous_result_is_recorded_after_a_ledger_blip_not_left_as_orphan(
    postgres_url: str, sandbox: SandboxProcess
) -> None:
    proxy = await TcpProxy.for_url(postgres_url).start()
    try:
        async with rig(
            proxy.url(postgres_url), sandbox, reconcile_grace_s=20.0, redial_unknown=False
        ) as r:
            now = datetime.now(UTC)
            claim = await claim_one(r, "req-blip", now)
            # The POST is held at the sandbox (a latency of an hour) until the ledger is cut.
            await sandbox.aset_faults(error_5xx_share=1.0, latency_ms=3_600_000)
            dialing = asyncio.create_task(r.dispatcher.dial(claim))
            await until(lambda: posts_in_flight(sandbox, 1), "the POST is at the sandbox")
            proxy.cut()  # the ledger is unreachable when the 5xx comes back
            await sandbox.aset_faults(latency_ms=0)
            await until(lambda: answered_5xx(sandbox), "the 5xx came back")
            await until(lambda: proxy.refused > 0, "the dispatcher's write found no ledger")
            proxy.restore()

            assert await dialing == "unknown"
            await sandbox.aset_faults(error_5xx_share=0.0, latency_ms=0)
            r.reconciler.clock = lambda: now + timedelta(seconds=100)
            results = await r.reconciler.run_once()

            assert "requeued" not in results
            assert (await row(r.ledger, "req-blip")).state == "unresolved"
            assert await sandbox.aground_truth() == []
    finally:
        await proxy.close()
