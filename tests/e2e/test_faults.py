"""Faults at Bland (the sandbox's knobs) and at the service (kill -9): still one call per request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from service.settings import Settings
from tests.support.bus import Tap
from tests.support.sandbox import SandboxFactory, SandboxProcess
from tests.support.service import (
    FAST_SANDBOX,
    StartService,
    call_requests,
    calls_by_request,
    latest_by_request,
    publish_many,
    settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _each_dialed_once(
    tap: Tap, sandbox: SandboxProcess, ids: set[str]
) -> list[dict[str, Any]]:
    truth = await sandbox.aground_truth()
    per_request = calls_by_request(truth)
    assert set(per_request) == ids
    assert set(per_request.values()) == {1}
    queued = latest_by_request(tap.seen, ["call.queued"])
    assert {rid: body["call_id"] for rid, body in queued.items()} == {
        call["metadata"]["dialer_request_id"]: call["call_id"] for call in truth
    }
    return truth


async def _until_calls(sandbox: SandboxProcess, count: int, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (await sandbox.acounts())["total"] < count:
        assert loop.time() < deadline, f"fewer than {count} calls within {timeout_s} s"
        await asyncio.sleep(0.05)


Settle = Callable[[dict[str, Any], int], Awaitable[tuple[SandboxProcess, set[str]]]]


@pytest.fixture
def settle(
    sqlite_url: str,
    sandbox_factory: SandboxFactory,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> Settle:
    """Start a service against a sandbox with these faults; publish `count` requests; settle."""

    async def run(faults: dict[str, Any], count: int) -> tuple[SandboxProcess, set[str]]:
        sandbox = sandbox_factory(**FAST_SANDBOX, **faults)
        await asyncio.to_thread(start, sqlite_url, sandbox)
        requests = call_requests(count)
        ids = {rid for rid, _ in requests}
        await publish_many(bus_settings, requests)
        await tap.wait_for(lambda seen: settled(seen, ids), timeout_s=60)
        return sandbox, ids

    return run


async def test_429s_delay_but_every_request_is_dialed_exactly_once(
    settle: Settle, tap: Tap
) -> None:
    sandbox, ids = await settle({"rate_limit_429_share": 0.3}, 100)

    await _each_dialed_once(tap, sandbox, ids)
    refused = [r for r in await sandbox.arequests() if r["status_code"] == 429]
    assert len(refused) >= 10  # the fault really happened, and was retried past
    finals = latest_by_request(tap.seen, ["call.completed", "call.failed"])
    assert set(finals) == ids


async def test_a_dropped_connection_after_recording_is_reconciled_to_that_call(
    settle: Settle, tap: Tap
) -> None:
    sandbox, ids = await settle({"drop_share": 1.0}, 3)

    truth = await _each_dialed_once(tap, sandbox, ids)
    assert all(call["response_dropped"] for call in truth)
    assert {r["outcome"] for r in await sandbox.arequests()} == {"dropped"}
    queued = latest_by_request(tap.seen, ["call.queued"])
    assert all(body["reconciled"] for body in queued.values())
    assert not tap.of("call.unresolved")


async def test_lost_webhooks_are_made_up_for_by_polling(settle: Settle, tap: Tap) -> None:
    sandbox, ids = await settle({"webhook_loss_share": 0.1}, 100)

    await _each_dialed_once(tap, sandbox, ids)
    lost = [d for d in await sandbox.awebhooks() if d.get("lost")]
    assert lost
    finals = latest_by_request(tap.seen, ["call.completed", "call.failed"])
    assert set(finals) == ids
    polled = {rid for rid, body in finals.items() if body.get("source") == "poll"}
    assert len(polled) >= len(lost)


async def test_kill_9_mid_run_then_restart_loses_nothing_and_dials_nobody_twice(
    sqlite_url: str,
    sandbox_factory: SandboxFactory,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    # Webhooks sent while the service is down are retried for about 6 s.
    # 100 ms per POST: claims queue for connections, so the kill leaves some never sent.
    sandbox = sandbox_factory(**FAST_SANDBOX, webhook_retries=8, latency_ms=100)
    first = await asyncio.to_thread(start, sqlite_url, sandbox)
    requests = call_requests(300)
    ids = {rid for rid, _ in requests}

    await publish_many(bus_settings, requests)
    await _until_calls(sandbox, 60)
    await asyncio.to_thread(first.kill9)
    assert (await sandbox.acounts())["total"] < len(ids), "killed too late to prove anything"
    port = int(first.env["DIALER_HTTP_PORT"])  # Bland's webhooks keep their URL
    second = await asyncio.to_thread(start, sqlite_url, sandbox, port=port)

    await tap.wait_for(lambda seen: settled(seen, ids), timeout_s=120)

    per_request = calls_by_request(await sandbox.aground_truth())
    assert max(per_request.values()) == 1, "a request was dialed twice"
    assert set(per_request) == ids, "a request was never dialed"
    finals = latest_by_request(tap.seen, ["call.completed", "call.failed", "call.unresolved"])
    assert set(finals) == ids, "a request has no final outcome"
    # Claims the dead process never sent are swept as orphans, found absent at Bland after
    # the grace period, and dialed once by the second process: none ends unresolved.
    assert not latest_by_request(tap.seen, ["call.unresolved"])
    code, _ = await asyncio.to_thread(second.terminate)
    assert code == 0
