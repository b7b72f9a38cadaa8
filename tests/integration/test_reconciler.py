"""Reconciler + dispatcher + real ledger + sandbox: unknown dial outcomes settled, never redialed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.bland.client import BlandClient
from service.outcomes.payloads import parse_time
from service.outcomes.reconciler import LIST_LIMIT, candidates, carries, number_forms
from tests.support.ledger import claim as claim_round
from tests.support.ledger import events, row
from tests.support.rig import Rig, new_call, rig
from tests.support.sandbox import SandboxFactory, SandboxProcess

pytestmark = pytest.mark.integration

PHONE = "+14157880001"


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


async def dial(r: Rig, *request_ids: str, accept: bool = True) -> None:
    """Accept the requests (unless they are pending already); one dispatcher round to its end."""
    if accept:
        await r.ledger.accept_calls([new_call(i, PHONE) for i in request_ids], datetime.now(UTC))
    await r.dispatcher.run_once()
    await r.dispatcher.join()


async def test_a_dropped_answer_is_reconciled_to_the_call_bland_placed(
    database_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)
    await sandbox.aset_outcomes(human=0, voicemail=0, no_answer=1, busy=0, failed=0)
    async with rig(database_url, sandbox) as r:
        await dial(r, "req-drop")
        assert (await row(r.ledger, "req-drop")).state == "unknown"

        results = await r.reconciler.run_once()

        [truth] = await sandbox.aground_truth()
        found = await row(r.ledger, "req-drop")
        assert results.get("matched") == 1
        assert found.call_id == truth["call_id"]
        assert found.state in {"queued", "completed"}
        queued = [e for e in await events(r.ledger, "req-drop") if e.type == "call.queued"]
        assert len(queued) == 1
        assert queued[0].model_dump()["reconciled"] is True
        assert found.attempts == 1
        assert len(await sandbox.aground_truth()) == 1


async def test_a_call_already_over_is_settled_in_the_same_round(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)
    await sandbox.aset_outcomes(human=0, voicemail=0, no_answer=0, busy=1, failed=0)
    async with rig(sqlite_url, sandbox) as r:
        await dial(r, "req-over")
        [truth] = await sandbox.aground_truth()
        await wait_completed(sandbox, truth["call_id"])

        await r.reconciler.run_once()

        assert (await row(r.ledger, "req-over")).state == "completed"
        types = [e.type for e in await events(r.ledger, "req-over")]
        assert types == ["call.accepted", "call.queued", "call.completed"]


async def wait_completed(sandbox: SandboxProcess, call_id: str) -> None:
    """Wait until the sandbox says the call is over."""
    for _ in range(200):
        if sandbox.get_call(call_id)["completed"]:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the sandbox call did not complete")


async def test_nothing_at_bland_after_the_grace_is_redialed_once_then_unresolved(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(error_5xx_share=1.0)
    async with rig(sqlite_url, sandbox, reconcile_grace_s=100.0, retry_backoff_base_s=0.001) as r:
        now = datetime.now(UTC)
        await dial(r, "req-5xx")

        first = await r.reconciler.run_once()
        assert first.get("pending") == 1
        assert (await row(r.ledger, "req-5xx")).state == "unknown"
        r.reconciler.clock = lambda: now + timedelta(seconds=101)
        second = await r.reconciler.run_once()
        assert second.get("requeued") == 1
        assert (await row(r.ledger, "req-5xx")).state == "pending"
        r.dispatcher.clock = lambda: now + timedelta(seconds=102)
        await dial(r, "req-5xx", accept=False)  # Bland still answers 5xx: unknown again
        r.reconciler.clock = lambda: now + timedelta(seconds=300)
        third = await r.reconciler.run_once()

        found = await row(r.ledger, "req-5xx")
        assert third.get("unresolved") == 1
        assert found.state == "unresolved"
        assert found.attempts == 2
        assert [e.type for e in await events(r.ledger, "req-5xx")][-1] == "call.unresolved"
        assert await sandbox.aground_truth() == []


async def test_another_request_s_call_to_the_same_number_is_not_a_match(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox, reconcile_grace_s=10.0, redial_unknown=False) as r:
        now = datetime.now(UTC)
        await dial(r, "req-a")
        await sandbox.aset_faults(error_5xx_share=1.0)
        await dial(r, "req-b")
        assert (await row(r.ledger, "req-b")).state == "unknown"
        r.reconciler.clock = lambda: now + timedelta(seconds=11)

        results = await r.reconciler.run_once()

        assert results.get("unresolved") == 1
        assert (await row(r.ledger, "req-b")).state == "unresolved"
        assert (await row(r.ledger, "req-a")).state in {"queued", "completed"}


async def test_an_abandoned_dialing_row_is_swept_and_matched(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox) as r:
        now = datetime.now(UTC)
        await r.ledger.accept_calls([new_call("req-died", PHONE)], now)
        [claim] = await claim_round(
            r.ledger,
            owner="died",
            now=now,
            limit=1,
            max_concurrent=10,
            max_per_second=10.0,
            slot_lease_s=3600.0,
        )
        # The process posted and died before it could record the answer.
        call_id = await r.bland.create_call(
            {"phone_number": PHONE, "task": "t", "metadata": {"dialer_request_id": "req-died"}}
        )
        later = now + timedelta(seconds=120)
        r.reconciler.clock = lambda: later

        results = await r.reconciler.run_once()

        assert results["swept"] == 1
        assert results.get("matched") == 1
        assert (await row(r.ledger, "req-died")).call_id == call_id
        assert claim.attempt_no == 1


async def orphan(r: Rig, request_id: str, now: datetime) -> None:
    """Accept and claim a request as a process that then dies before its POST leaves."""
    await r.ledger.accept_calls([new_call(request_id, PHONE)], now)
    await claim_round(
        r.ledger,
        owner="died",
        now=now,
        limit=1,
        max_concurrent=10,
        max_per_second=10.0,
        slot_lease_s=3600.0,
    )


@pytest.mark.parametrize("redial_unknown", [True, False])
async def test_an_orphan_bland_never_received_is_dialed_once_after_the_grace(
    database_url: str, sandbox: SandboxProcess, redial_unknown: bool
) -> None:
    async with rig(
        database_url, sandbox, reconcile_grace_s=200.0, redial_unknown=redial_unknown
    ) as r:
        now = datetime.now(UTC)
        await orphan(r, "req-orphan", now)
        r.reconciler.clock = lambda: now + timedelta(seconds=100)  # past the stale threshold
        early = await r.reconciler.run_once()
        assert early == {"swept": 1, "pending": 1}
        assert (await row(r.ledger, "req-orphan")).state == "unknown"

        r.reconciler.clock = lambda: now + timedelta(seconds=201)
        late = await r.reconciler.run_once()

        if not redial_unknown:
            assert late.get("unresolved") == 1
            assert (await row(r.ledger, "req-orphan")).state == "unresolved"
            assert await sandbox.aground_truth() == []
            return
        assert late.get("requeued") == 1
        assert (await row(r.ledger, "req-orphan")).state == "pending"
        r.dispatcher.clock = lambda: now + timedelta(seconds=202)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        [truth] = await sandbox.aground_truth()
        found = await row(r.ledger, "req-orphan")
        assert found.state in {"queued", "completed"}
        assert found.call_id == truth["call_id"]
        assert found.attempts == 2
        types = [e.type for e in await events(r.ledger, "req-orphan")]
        assert types.count("call.accepted") == 1
        assert "call.unresolved" not in types


async def test_an_orphan_whose_post_reached_bland_is_matched_not_redialed(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox, reconcile_grace_s=60.0) as r:
        now = datetime.now(UTC)
        await orphan(r, "req-sent", now)
        await r.bland.create_call(
            {"phone_number": PHONE, "task": "t", "metadata": {"dialer_request_id": "req-sent"}}
        )
        r.reconciler.clock = lambda: now + timedelta(seconds=120)

        results = await r.reconciler.run_once()

        assert results.get("matched") == 1
        assert "requeued" not in results
        assert len(await sandbox.aground_truth()) == 1


async def test_an_unknown_outcome_is_not_redialed_when_the_list_cannot_be_read_whole(
    sqlite_url: str, sandbox_factory: SandboxFactory
) -> None:
    sandbox = sandbox_factory(plan="enterprise", same_number_window_s=0)
    async with rig(sqlite_url, sandbox, reconcile_grace_s=10.0) as r:
        now = datetime.now(UTC)
        await sandbox.aset_faults(error_5xx_share=1.0)
        await dial(r, "req-5xx-ambiguous")
        await sandbox.aset_faults(error_5xx_share=0.0)
        # The number is called more often since than one page of Bland's list holds.
        async with httpx.AsyncClient(base_url=sandbox.base_url, headers=sandbox.headers) as http:
            for n in range(LIST_LIMIT):
                body = {"phone_number": PHONE, "task": "t", "metadata": {"other": n}}
                (await http.post("/v1/calls", json=body)).raise_for_status()
        r.reconciler.clock = lambda: now + timedelta(seconds=11)

        results = await r.reconciler.run_once()

        assert results.get("unresolved") == 1
        assert "requeued" not in results
        assert (await row(r.ledger, "req-5xx-ambiguous")).state == "unresolved"


async def test_a_failed_lookup_postpones_and_never_gives_up(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(error_5xx_share=1.0)
    async with rig(sqlite_url, sandbox, reconcile_grace_s=0.1) as r:
        await dial(r, "req-blind")
        later = datetime.now(UTC) + timedelta(seconds=1)
        r.reconciler.clock = lambda: later  # past the grace: absence would count now
        r.reconciler.bland = BlandClient(
            r.settings.model_copy(update={"bland_base_url": "http://127.0.0.1:9"}), r.metrics
        )
        try:
            results = await r.reconciler.run_once()
        finally:
            await r.reconciler.bland.aclose()

        assert results.get("error") == 1
        assert (await row(r.ledger, "req-blind")).state == "unknown"


# ------------------------------------------------------------------ pure helpers


def test_candidates_keep_recent_and_undated_calls() -> None:
    started = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    calls = [
        {"call_id": "old", "created_at": "2026-11-24T11:00:00+00:00"},
        {"call_id": "skewed", "created_at": "2026-11-24T11:58:00.000Z"},
        {"call_id": "new", "created_at": "2026-11-24T12:00:01.025251+00:00"},
        {"call_id": "undated"},
    ]

    kept = [c["call_id"] for c in candidates(calls, started, skew_s=300)]

    assert kept == ["skewed", "new", "undated"]


def test_metadata_decides_and_its_absence_is_not_a_no() -> None:
    assert carries({"metadata": {"dialer_request_id": "r1"}}, "r1") is True
    assert carries({"metadata": {"dialer_request_id": "r2"}}, "r1") is False
    assert carries({"metadata": {}}, "r1") is False
    assert carries({"call_id": "c"}, "r1") is None


def test_absence_is_checked_with_and_without_the_plus() -> None:
    assert number_forms("+14157880001") == ["+14157880001", "14157880001"]
    assert number_forms("14157880001") == ["14157880001"]


def test_bland_timestamps_parse() -> None:
    assert parse_time("2024-04-27T23:51:18.025251+00:00") == datetime(
        2024, 4, 27, 23, 51, 18, 25251, tzinfo=UTC
    )
    assert parse_time("2024-04-27T23:52:10.000Z") == datetime(2024, 4, 27, 23, 52, 10, tzinfo=UTC)
    assert parse_time("2024-04-27T23:52:10") == datetime(2024, 4, 27, 23, 52, 10, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None
