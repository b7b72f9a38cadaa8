"""The whole pipeline with `dialer serve` as a process: requests in, calls at the sandbox, events out."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from service.ledger import Ledger
from service.settings import Settings
from tests.support.bus import Tap
from tests.support.sandbox import SandboxProcess
from tests.support.service import (
    StartService,
    call_request,
    call_requests,
    calls_by_request,
    fictional_numbers,
    latest_by_request,
    publish_many,
    settled,
)

pytestmark = [pytest.mark.integration]


async def _run_and_check(
    tap: Tap,
    bus_settings: Settings,
    sandbox: SandboxProcess,
    count: int,
    timeout_s: float,
) -> None:
    """Publish `count` requests; each is accepted, dialed once, queued with its id, settled."""
    requests = call_requests(count)
    ids = {request_id for request_id, _ in requests}
    await publish_many(bus_settings, requests)
    await tap.wait_for(lambda seen: settled(seen, ids), timeout_s=timeout_s)

    truth = await sandbox.aground_truth()
    per_request = calls_by_request(truth)
    assert len(truth) == count
    assert set(per_request) == ids
    assert max(per_request.values()) == 1

    assert set(latest_by_request(tap.seen, ["call.accepted"])) == ids
    queued = latest_by_request(tap.seen, ["call.queued"])
    assert set(queued) == ids
    sandbox_ids = {call["metadata"]["dialer_request_id"]: call["call_id"] for call in truth}
    assert {rid: body["call_id"] for rid, body in queued.items()} == sandbox_ids
    finals = latest_by_request(tap.seen, ["call.completed", "call.failed"])
    assert set(finals) == ids
    assert {body["call_id"] for body in finals.values()} == set(sandbox_ids.values())


@pytest.mark.slow
async def test_500_requests_make_exactly_500_calls(
    database_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    service = await asyncio.to_thread(start, database_url, fast_sandbox)

    await _run_and_check(tap, bus_settings, fast_sandbox, 500, timeout_s=90)

    metrics = service.metrics()
    assert 'dialer_requests_consumed_total{kind="call.create",outcome="accepted"} 500.0' in metrics
    assert 'dialer_backlog{state="pending"} 0.0' in metrics
    code, _ = await asyncio.to_thread(service.terminate)
    assert code == 0


@pytest.mark.slow
async def test_two_services_on_one_postgres_dial_each_request_once_within_the_cap(
    postgres_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    cap = "8"
    first, second = await asyncio.gather(
        asyncio.to_thread(start, postgres_url, fast_sandbox, DIALER_MAX_CONCURRENT_CALLS=cap),
        asyncio.to_thread(start, postgres_url, fast_sandbox, DIALER_MAX_CONCURRENT_CALLS=cap),
    )

    await _run_and_check(tap, bus_settings, fast_sandbox, 500, timeout_s=120)

    counts = await fast_sandbox.acounts()
    assert counts["total"] == 500
    assert 1 < counts["max_active"] <= int(cap)
    for service in (first, second):  # both did part of the work
        assert 'dialer_calls_dialed_total{result="queued"}' in service.metrics()


async def test_the_same_request_published_five_times_is_one_call(
    sqlite_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    await asyncio.to_thread(start, sqlite_url, fast_sandbox)
    request_id, later_id = f"dup-{uuid.uuid4().hex}", f"later-{uuid.uuid4().hex}"
    number, other_number = fictional_numbers(2)
    body = json.dumps(call_request(number)).encode()

    await publish_many(bus_settings, [(request_id, body)] * 5)
    await tap.wait_for(lambda seen: settled(seen, [request_id]), timeout_s=30)
    await tap.wait_for(lambda seen: len(seen) >= 7)  # 5 answers + queued + final
    # A later request dialed and settled: a second dial of the first would have come before.
    later = json.dumps(call_request(other_number)).encode()
    await publish_many(bus_settings, [(later_id, later)])
    await tap.wait_for(lambda seen: settled(seen, [later_id]), timeout_s=30)

    truth = await fast_sandbox.aground_truth()
    assert calls_by_request(truth) == {request_id: 1, later_id: 1}
    assert len(await fast_sandbox.arequests()) == 2
    call_ids = {c["metadata"]["dialer_request_id"]: c["call_id"] for c in truth}
    queued = {
        s.body["call_id"] for s in tap.of("call.queued") if s.body["request_id"] == request_id
    }
    assert queued == {call_ids[request_id]}


async def test_sigterm_drains_and_exits_zero_within_the_grace_period(
    sqlite_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    grace_s = 5.0
    service = await asyncio.to_thread(
        start, sqlite_url, fast_sandbox, DIALER_SHUTDOWN_GRACE_S=str(grace_s)
    )
    requests = call_requests(50)
    await publish_many(bus_settings, requests)
    await tap.wait_for(lambda seen: len(seen) >= 10, timeout_s=20)  # mid-run

    code, elapsed_s = await asyncio.to_thread(service.terminate, grace_s + 5)

    assert code == 0, service.log()[-3000:]
    assert elapsed_s < grace_s
    assert "service_stopped" in service.log()
    # In-flight dials were recorded and every event written was published before it left.
    ledger = await Ledger.open(Settings(database_url=sqlite_url))
    try:
        counts = await ledger.counts(datetime.now(UTC))
    finally:
        await ledger.close()
    assert counts.by_state["dialing"] == 0
    assert counts.outbox_pending == 0
    assert sum(counts.by_state.values()) > 0
    assert max(calls_by_request(await fast_sandbox.aground_truth()).values(), default=1) == 1
