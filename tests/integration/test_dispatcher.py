"""Dispatcher + real ledger + the sandbox over HTTP: every request dialed exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from schemas.envelope import DialerOptions
from schemas.events import parse_event
from service.dialing.results import call_body
from service.ledger import Claim, Ledger, NewCall
from service.ledger.tables import outbox
from service.metrics import Metrics
from tests.support.ledger import rows
from tests.support.rig import Rig
from tests.support.rig import rig as service_rig
from tests.support.sandbox import SandboxProcess, free_port
from tests.support.waits import DEADLINE_S, rounds_pass

pytestmark = pytest.mark.integration

WEBHOOK_URL = "http://127.0.0.1:9/webhooks/bland"


def rig(db_url: str, base_url: str, **overrides: Any) -> AbstractAsyncContextManager[Rig]:
    """The service's parts on a fresh ledger, dialing `base_url`; closed afterwards."""
    values: dict[str, Any] = {
        "max_concurrent_calls": 100,
        "max_calls_per_second": 200.0,
        "dispatch_idle_s": 0.02,
        "retry_backoff_base_s": 0.02,
        "retry_backoff_max_s": 0.2,
        **overrides,
    }
    return service_rig(db_url, base_url, **values)


def phone(n: int) -> str:
    """A distinct valid US number per request (no same-number 429 between them)."""
    return f"+1415777{n:04d}"


def new_call(n: int, **body: Any) -> NewCall:
    """Request `req-n` with the publisher's own metadata."""
    return NewCall(
        request_id=f"req-{n}",
        correlation_id=f"corr-{n}",
        reply_to=None,
        phone_number=phone(n),
        body={"phone_number": phone(n), "task": "Say hello.", "metadata": {"order": n}, **body},
        options=DialerOptions(),
        publisher_webhook=None,
    )


async def accept(rig: Rig, count: int, **body: Any) -> None:
    """Write `count` due requests into the ledger."""
    await rig.ledger.accept_calls([new_call(n, **body) for n in range(count)], datetime.now(UTC))


async def event_types(ledger: Ledger, request_id: str) -> list[str]:
    """The event types written for one request, in order."""
    async with ledger.engine.connect() as conn:
        result = await conn.execute(
            select(outbox.c.event_type, outbox.c.body)
            .where(outbox.c.request_id == request_id)
            .order_by(outbox.c.id)
        )
        return [parse_event(r.event_type, r.body).type for r in result]


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = DEADLINE_S) -> None:
    """Poll an async condition until it holds, or fail."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def all_in(ledger: Ledger, states: set[str], count: int) -> bool:
    """True when `count` rows exist and every one is in one of `states`."""
    found = await rows(ledger)
    return len(found) == count and all(r.state in states for r in found.values())


def dialed(metrics: Metrics, result: str) -> float:
    """dialer_calls_dialed_total{result}."""
    value = metrics.registry.get_sample_value("dialer_calls_dialed_total", {"result": result})
    return value or 0.0


# ------------------------------------------------------------------ pure body rule


def claim_of(body: dict[str, Any], publisher_webhook: str | None = None) -> Claim:
    """A claim carrying `body`."""
    return Claim(
        request_id="req-x",
        attempt_id=1,
        attempt_no=1,
        phone_number="+14157770000",
        body=body,
        correlation_id=None,
        reply_to=None,
        publisher_webhook=publisher_webhook,
        started_at=datetime.now(UTC),
    )


def test_body_keeps_publisher_metadata_and_adds_request_id_and_our_webhook() -> None:
    claim = claim_of({"task": "t", "metadata": {"a": 1, "dialer_request_id": "forged"}})

    body = call_body(claim, WEBHOOK_URL)

    assert body["metadata"] == {"a": 1, "dialer_request_id": "req-x"}
    assert body["webhook"] == WEBHOOK_URL
    assert claim.body["metadata"] == {"a": 1, "dialer_request_id": "forged"}  # not mutated


def test_without_our_webhook_the_publisher_webhook_goes_to_bland() -> None:
    moved = call_body(claim_of({"task": "t"}, "https://pub.example/hook"), None)
    kept = call_body(claim_of({"task": "t", "webhook": "https://own.example/h"}), None)

    assert moved["webhook"] == "https://pub.example/hook"
    assert moved["metadata"] == {"dialer_request_id": "req-x"}
    assert kept["webhook"] == "https://own.example/h"


# ------------------------------------------------------------------ against the sandbox


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset (its caps, 100 calls an hour, are above any test here)."""
    module_sandbox.reset()
    return module_sandbox


async def test_n_requests_make_n_calls_each_recorded_with_its_call_id(
    database_url: str, sandbox: SandboxProcess
) -> None:
    count = 25
    async with rig(database_url, sandbox.base_url, webhook_url=WEBHOOK_URL) as r:
        await accept(r, count)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"queued", "completed"}, count))

        truth = await sandbox.aground_truth()
        found = await rows(r.ledger)
        assert len(truth) == count
        by_request = {call["metadata"]["dialer_request_id"]: call for call in truth}
        assert set(by_request) == set(found)
        for request_id, row in found.items():
            call = by_request[request_id]
            assert row.call_id == call["call_id"]
            assert call["metadata"]["order"] == int(request_id.removeprefix("req-"))
            assert call["body"]["webhook"] == WEBHOOK_URL
        assert await event_types(r.ledger, "req-0") == ["call.accepted", "call.queued"]
        assert dialed(r.metrics, "queued") == count


@pytest.mark.slow
async def test_with_30_percent_429s_every_request_is_dialed_exactly_once(
    database_url: str, sandbox: SandboxProcess
) -> None:
    count = 40
    await sandbox.aset_faults(rate_limit_429_share=0.3)
    async with rig(database_url, sandbox.base_url) as r:
        await accept(r, count)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"queued"}, count), timeout_s=30)

        truth = await sandbox.aground_truth()
        per_request = Counter(call["metadata"]["dialer_request_id"] for call in truth)
        assert per_request == Counter({f"req-{n}": 1 for n in range(count)})
        assert (await sandbox.acounts())["rejected"].get("fault_429", 0) > 0
        assert dialed(r.metrics, "throttled") > 0
        # 429s never spend the retry budget
        assert all(row.transient_retries == 0 for row in (await rows(r.ledger)).values())


async def test_dropped_answer_leaves_one_call_and_an_unknown_row_never_redialed(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)
    async with rig(sqlite_url, sandbox.base_url) as r:
        await accept(r, 1)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"unknown"}, 1))
        await rounds_pass(lambda: r.dispatcher.rounds)  # nothing may be dialed again
        await r.dispatcher.join()

        assert len(await sandbox.aground_truth()) == 1
        assert (await rows(r.ledger))["req-0"].attempts == 1
        assert dialed(r.metrics, "unknown") == 1


async def test_5xx_is_unknown_never_redialed(sqlite_url: str, sandbox: SandboxProcess) -> None:
    await sandbox.aset_faults(error_5xx_share=1.0)
    async with rig(sqlite_url, sandbox.base_url) as r:
        await accept(r, 3)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"unknown"}, 3))
        await rounds_pass(lambda: r.dispatcher.rounds)  # nothing may be dialed again
        await r.dispatcher.join()

        assert all(row.attempts == 1 for row in (await rows(r.ledger)).values())


async def test_a_refused_request_fails_with_bland_errors(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox.base_url) as r:
        await accept(r, 1, max_duration=0)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"failed"}, 1))

        row = (await rows(r.ledger))["req-0"]
        assert "max" in (row.errors or "").lower()
        assert await event_types(r.ledger, "req-0") == ["call.accepted", "call.failed"]
        assert await sandbox.aground_truth() == []


async def test_a_refused_api_key_pauses_dialing_and_keeps_requests_pending(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox.base_url, bland_api_key="wrong-key") as r:
        await accept(r, 5)
        await r.dispatcher.start()
        await wait_for(lambda: asyncio.sleep(0, result=dialed(r.metrics, "account_error") > 0))
        await r.dispatcher.join()  # every POST of the round is answered and recorded

        assert r.dispatcher.ready is False
        assert "401" in (r.dispatcher.problem or "")
        found = await rows(r.ledger)
        assert {row.state for row in found.values()} <= {"pending", "dialing"}
        assert all(row.transient_retries == 0 for row in found.values())
        assert await sandbox.aground_truth() == []


async def test_connection_failures_retry_then_fail_after_the_budget(sqlite_url: str) -> None:
    async with rig(sqlite_url, f"http://127.0.0.1:{free_port()}", max_transient_retries=2) as r:
        await accept(r, 1)
        await r.dispatcher.start()
        await wait_for(lambda: all_in(r.ledger, {"failed"}, 1))

        row = (await rows(r.ledger))["req-0"]
        assert row.attempts == 3
        assert dialed(r.metrics, "transient") == 3


async def test_stop_abandons_a_slow_post_as_dialing_never_retried(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(latency_ms=1500)
    async with rig(sqlite_url, sandbox.base_url, bland_pool_size=1) as r:
        await accept(r, 2)
        await r.dispatcher.start()
        # The round that claimed one, then one that found no free connection: it waits.
        await wait_for(lambda: asyncio.sleep(0, result=r.dispatcher.rounds >= 2))
        assert r.dispatcher.in_flight == 1

        started = time.monotonic()
        await r.dispatcher.stop(grace_s=0.2)

        assert time.monotonic() - started < 1.0
        assert sorted(row.state for row in (await rows(r.ledger)).values()) == [
            "dialing",
            "pending",
        ]


async def test_stop_waits_for_posts_within_the_grace(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(latency_ms=300)
    async with rig(sqlite_url, sandbox.base_url) as r:
        await accept(r, 3)
        await r.dispatcher.start()
        await wait_for(lambda: asyncio.sleep(0, result=r.dispatcher.in_flight == 3))

        await r.dispatcher.stop(grace_s=5.0)

        assert await all_in(r.ledger, {"queued"}, 3)


async def test_same_number_429_waits_ten_seconds_without_spending_the_budget(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox.base_url) as r:
        twin = NewCall(
            request_id="req-twin",
            correlation_id=None,
            reply_to=None,
            phone_number=phone(0),
            body={"phone_number": phone(0), "task": "Say hello again."},
            options=DialerOptions(),
            publisher_webhook=None,
        )
        await r.ledger.accept_calls([new_call(0), twin], datetime.now(UTC))
        before = datetime.now(UTC)

        await r.dispatcher.run_once()
        await r.dispatcher.join()

        found = await rows(r.ledger)
        states = sorted(row.state for row in found.values())
        waiting = next(row for row in found.values() if row.state == "pending")
        assert states == ["pending", "queued"]
        assert (waiting.not_before - before).total_seconds() >= 10.0
        assert waiting.transient_retries == 0
        assert len(await sandbox.aground_truth()) == 1


async def test_a_running_dispatcher_dials_what_it_accepts_in_the_same_transaction(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox.base_url, dispatch_idle_s=3600.0) as r:
        await r.dispatcher.start()
        await r.dispatcher.join()  # its first round found nothing; it now idles for an hour

        accepted = await r.dispatcher.accept([new_call(0), new_call(1)], datetime.now(UTC))

        assert [a.duplicate for a in accepted] == [False, False]
        assert r.dispatcher.in_flight == 2  # claimed by the accept, posted at once
        await r.dispatcher.join()
        assert await all_in(r.ledger, {"queued"}, 2)
        assert len(await sandbox.aground_truth()) == 2


async def test_a_stopped_dispatcher_only_writes_what_it_accepts(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox.base_url) as r:
        await r.dispatcher.accept([new_call(0)], datetime.now(UTC))

        assert r.dispatcher.in_flight == 0
        assert await all_in(r.ledger, {"pending"}, 1)
        assert await sandbox.aground_truth() == []
