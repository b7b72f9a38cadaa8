"""A cancel that arrives before the call id is known still stops the call at Bland.

Dispatcher, reconciler and poller on a real ledger, against the sandbox over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.bland.client import BlandClient
from service.ledger import CallToStop, CancelResult
from service.metrics import Metrics
from service.outcomes.stops import CallStops
from service.settings import Settings
from tests.support.ledger import claim as claim_round
from tests.support.ledger import events, row
from tests.support.rig import Rig, new_call, rig
from tests.support.sandbox import SandboxProcess, start_sandbox

pytestmark = pytest.mark.integration

PHONE = "+14157990001"


@pytest.fixture(scope="module")
def slow_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """A sandbox on a real-time clock: a call rings for seconds, long enough to be stopped."""
    started = start_sandbox(log_dir=tmp_path_factory.mktemp("sandbox"), clock_speed=1.0)
    yield started
    started.stop()


@pytest.fixture
def sandbox(slow_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset; every call rings unanswered (30 s)."""
    slow_sandbox.reset()
    slow_sandbox.set_outcomes(human=0, voicemail=0, no_answer=1, busy=0, failed=0)
    return slow_sandbox


async def accept(r: Rig, request_id: str) -> None:
    """One due request."""
    call = new_call(request_id, PHONE, correlation_id=f"corr-{request_id}")
    await r.ledger.accept_calls([call], datetime.now(UTC))


async def cancel(r: Rig, request_id: str) -> CancelResult:
    """What the consumer does with a call.cancel."""
    return await r.ledger.cancel(
        request_id=request_id, call_id=None, correlation_id=None, reply_to=None, now=now()
    )


def now() -> datetime:
    """The wall clock, as the service reads it."""
    return datetime.now(UTC)


async def settled_at_bland(sandbox: SandboxProcess, call_id: str) -> dict[str, Any]:
    """The call's details once the sandbox says it is over."""
    for _ in range(100):
        details = sandbox.get_call(call_id)
        if details["completed"]:
            return details
        await asyncio.sleep(0.05)
    pytest.fail(f"call {call_id} still live at the sandbox: it was not stopped")


async def assert_canceled_as_requested(r: Rig, sandbox: SandboxProcess, request_id: str) -> None:
    """Bland's ground truth says canceled; the outcome makes the request canceled "requested"."""
    [truth] = await sandbox.aground_truth()
    assert truth["metadata"]["dialer_request_id"] == request_id
    assert (await settled_at_bland(sandbox, truth["call_id"]))["status"] == "canceled"
    assert (await row(r.ledger, request_id)).stop_sent_at is not None
    assert await r.ledger.calls_to_stop(10) == []

    assert await r.poller.run_once() == 1

    found = await row(r.ledger, request_id)
    assert (found.state, found.call_id, found.attempts) == ("canceled", truth["call_id"], 1)
    written = await events(r.ledger, request_id)
    assert [e.type for e in written] == ["call.accepted", "call.queued", "call.canceled"]
    assert written[-1].model_dump()["reason"] == "requested"


async def test_a_cancel_during_the_post_stops_the_call_once_its_id_arrives(
    database_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(latency_ms=1000)
    async with rig(database_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-inflight")
        assert (await r.dispatcher.run_once())[0] == 1  # the POST is now in flight
        result = await cancel(r, "req-inflight")
        assert (result.state, result.call_id, result.changed) == ("dialing", None, False)
        await sandbox.aset_faults(latency_ms=0)  # the POST already waits its second; stops don't

        await r.dispatcher.join()

        await assert_canceled_as_requested(r, sandbox, "req-inflight")


async def test_a_cancel_while_unknown_stops_the_call_the_reconciler_finds(
    database_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)
    async with rig(database_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-dropped")
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        assert (await cancel(r, "req-dropped")).state == "unknown"

        results = await r.reconciler.run_once()

        assert (results.get("matched"), results.get("stop_sent")) == (1, 1)
        await assert_canceled_as_requested(r, sandbox, "req-dropped")


async def test_a_cancel_during_a_post_whose_answer_is_lost_still_stops_the_call(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(latency_ms=500, drop_share=1.0)
    async with rig(sqlite_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-both")
        await r.dispatcher.run_once()
        assert (await cancel(r, "req-both")).state == "dialing"
        await sandbox.aset_faults(latency_ms=0)  # the drop is drawn after the latency
        await r.dispatcher.join()
        # record_unknown keeps the cancel (it once lived in `reason`, which the error overwrote)
        assert (await row(r.ledger, "req-both")).state == "unknown"

        results = await r.reconciler.run_once()

        assert results.get("stop_sent") == 1
        await assert_canceled_as_requested(r, sandbox, "req-both")


async def test_a_process_that_died_before_the_stop_is_relieved_by_the_sweep(
    database_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(database_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-died")
        [claim] = await claim_round(
            r.ledger,
            owner="died",
            now=now(),
            limit=1,
            max_concurrent=10,
            max_per_second=10.0,
            slot_lease_s=3600.0,
        )
        call_id = await r.bland.create_call(
            {"phone_number": PHONE, "task": "t", "metadata": {"dialer_request_id": "req-died"}}
        )
        await cancel(r, "req-died")
        # The dying process recorded the call id and never sent the stop.
        assert (await r.ledger.record_queued(claim, call_id, now())).recorded
        assert [c.call_id for c in await r.ledger.calls_to_stop(10)] == [call_id]
        assert not (await sandbox.aground_truth())[0]["completed"]

        results = await r.reconciler.run_once()

        assert results.get("stop_sent") == 1
        await assert_canceled_as_requested(r, sandbox, "req-died")
        assert (await r.reconciler.run_once()).get("stop_sent") is None  # sent once


async def test_a_failed_stop_is_retried_until_bland_accepts_it(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-retry")
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        queued = await row(r.ledger, "req-retry")
        await cancel(r, "req-retry")  # the consumer's own stop was lost: nobody sent it
        reachable = r.stops.bland
        r.stops.bland = BlandClient(
            Settings(bland_base_url="http://127.0.0.1:9"), Metrics(CollectorRegistry())
        )
        try:
            first = await r.reconciler.run_once()
        finally:
            await r.stops.bland.aclose()
            r.stops.bland = reachable

        assert first.get("stop_retry") == 1
        assert not sandbox.get_call(queued.call_id)["completed"]
        second = await r.reconciler.run_once()
        assert second.get("stop_sent") == 1
        await assert_canceled_as_requested(r, sandbox, "req-retry")


async def test_stops_asked_of_bland_are_counted_by_result(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-count")
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        call_id = (await row(r.ledger, "req-count")).call_id
        metrics = r.metrics
        unreachable = BlandClient(
            Settings(bland_base_url="http://127.0.0.1:9"), Metrics(CollectorRegistry())
        )
        asks = [
            (unreachable, call_id),
            (r.bland, "00000000-0000-0000-0000-000000000000"),  # Bland: "SID not found"
            (r.bland, call_id),
        ]
        try:
            results = [
                await CallStops(r.ledger, bland, metrics).stop(CallToStop("req-count", cid, now()))
                for bland, cid in asks
            ]
        finally:
            await unreachable.aclose()

        assert results == ["stop_retry", "stop_retry", "stop_sent"]
        counted = {
            result: metrics.registry.get_sample_value("dialer_call_stops_total", {"result": result})
            for result in ("error", "refused", "sent")
        }
        assert counted == {"error": 1.0, "refused": 1.0, "sent": 1.0}


async def test_a_cancel_during_a_throttled_post_cancels_without_a_call(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(latency_ms=500, rate_limit_429_share=1.0)
    async with rig(sqlite_url, sandbox, outcome_overdue_s=0.001) as r:
        await accept(r, "req-429")
        await r.dispatcher.run_once()
        assert (await cancel(r, "req-429")).state == "dialing"
        await r.dispatcher.join()

        found = await row(r.ledger, "req-429")
        assert (found.state, found.reason) == ("canceled", "requested")
        written = await events(r.ledger, "req-429")
        assert [e.type for e in written] == ["call.accepted", "call.canceled"]
        assert written[-1].model_dump()["reason"] == "requested"
        await sandbox.aset_faults(latency_ms=0, rate_limit_429_share=0.0)
        assert (await r.dispatcher.run_once())[0] == 0  # never dialed again
        assert await sandbox.aground_truth() == []
