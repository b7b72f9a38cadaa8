"""Outcomes end to end: the sandbox's signed webhooks into the service's HTTP app, polling, forwarding."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from schemas.envelope import DialerOptions
from service.ledger import Ledger, NewCall
from service.ledger.tables import outbox
from service.metrics import Metrics
from tests.support.ledger import rows
from tests.support.rig import Rig
from tests.support.rig import rig as service_rig
from tests.support.sandbox import SandboxFactory, SandboxProcess, WebhookReceiver
from tests.support.waits import DEADLINE_S

pytestmark = pytest.mark.integration

FINAL = {"completed", "failed", "canceled"}


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


def rig(db_url: str, sandbox: SandboxProcess, **overrides: Any) -> AbstractAsyncContextManager[Rig]:
    """The service's parts with their HTTP app serving our webhook URL to the sandbox."""
    base: dict[str, Any] = {
        "max_calls_per_second": 200.0,
        "dispatch_idle_s": 0.02,
        "outcome_overdue_s": 60.0,
        "outcome_poll_every_s": 0.2,
        "webhook_grace_s": 0.2,
        "poll_interval_s": 0.2,
        **overrides,
    }
    return service_rig(db_url, sandbox, serve_http=True, **base)


def new_call(n: int, publisher_webhook: str | None = None) -> NewCall:
    """Request `req-n` to its own number."""
    phone = f"+1415999{n:04d}"
    return NewCall(
        request_id=f"req-{n}",
        correlation_id=None,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Say hello.", "metadata": {"n": n}},
        options=DialerOptions(),
        publisher_webhook=publisher_webhook,
    )


async def accept(r: Rig, count: int, publisher_webhook: str | None = None) -> None:
    """Write `count` due requests."""
    calls = [new_call(n, publisher_webhook) for n in range(count)]
    await r.ledger.accept_calls(calls, datetime.now(UTC))


async def event_count(ledger: Ledger) -> int:
    """Outbox rows written so far."""
    async with ledger.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox)) or 0)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float = DEADLINE_S) -> None:
    """Poll an async condition until it holds, or fail."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def all_final(ledger: Ledger, count: int) -> bool:
    """`count` rows, every one settled."""
    found = await rows(ledger)
    return len(found) == count and all(row.state in FINAL for row in found.values())


async def look_due(r: Rig) -> bool:
    """True when a queued call's next look has come (the poller would ask Bland now)."""
    return bool(await r.ledger.overdue_calls(r.poller.clock(), 1))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of a metric (0 when absent)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def signed(secret: str, payload: object) -> tuple[bytes, str]:
    """A body and its Bland signature."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return body, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def assert_outcomes_match_the_sandbox(r: Rig, sandbox: SandboxProcess) -> None:
    """Every row's recorded outcome is the one the sandbox reports for its call."""
    truth = {call["call_id"]: call for call in await sandbox.aground_truth()}
    for row in (await rows(r.ledger)).values():
        call = truth[row.call_id]
        recorded = json.loads(row.outcome)
        assert recorded["status"] == call["status"]
        assert call["metadata"]["dialer_request_id"] == row.request_id


async def test_signed_webhooks_settle_every_call_within_the_concurrency_limit(
    database_url: str, sandbox: SandboxProcess
) -> None:
    count = 12
    async with rig(database_url, sandbox, max_concurrent_calls=3) as r:
        await accept(r, count)
        await r.dispatcher.start()
        await wait_for(lambda: all_final(r.ledger, count))

        await assert_outcomes_match_the_sandbox(r, sandbox)
        assert sample(r.metrics, "dialer_webhooks_total", result="accepted") == count
        counts = await sandbox.acounts()
        assert counts["total"] == count
        assert 1 <= counts["max_active"] <= 3
        assert all(
            json.loads(row.outcome)["source"] == "webhook"
            for row in (await rows(r.ledger)).values()
        )


@pytest.mark.slow
async def test_lost_webhooks_are_made_up_for_by_polling(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    count = 50
    await sandbox.aset_faults(webhook_loss_share=0.1)
    async with rig(sqlite_url, sandbox, max_concurrent_calls=10, outcome_overdue_s=1.0) as r:
        await accept(r, count)
        await r.dispatcher.start()
        await r.poller.start()
        await wait_for(lambda: all_final(r.ledger, count), timeout_s=40)

        lost = [d for d in await sandbox.awebhooks() if d.get("lost")]
        sources = [json.loads(row.outcome)["source"] for row in (await rows(r.ledger)).values()]
        assert lost, "the seeded run lost no webhook: the test proves nothing"
        assert sources.count("poll") >= len(lost)
        await assert_outcomes_match_the_sandbox(r, sandbox)


async def test_bad_signature_is_401_and_changes_nothing(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(webhook_loss_share=1.0)
    async with rig(sqlite_url, sandbox) as r:
        await accept(r, 1)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        call_id = (await rows(r.ledger))["req-0"].call_id
        before = await event_count(r.ledger)
        payload = {
            "call_id": call_id,
            "completed": True,
            "status": "completed",
            "queue_status": "complete",
        }
        body, _ = signed(sandbox.webhook_secret, payload)

        forged = await r.webhooks.handle(body, signed("guess", payload)[1])
        unsigned = await r.webhooks.handle(body, None)

        assert (forged.result, forged.http_status) == ("bad_signature", 401)
        assert unsigned.http_status == 401
        assert (await rows(r.ledger))["req-0"].state == "queued"
        assert await event_count(r.ledger) == before
        assert sample(r.metrics, "dialer_webhooks_total", result="bad_signature") == 2


async def test_a_replayed_webhook_changes_nothing(sqlite_url: str, sandbox: SandboxProcess) -> None:
    await sandbox.aset_faults(webhook_loss_share=1.0)
    async with rig(sqlite_url, sandbox) as r:
        await accept(r, 1)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        call_id = (await rows(r.ledger))["req-0"].call_id
        payload = {
            "call_id": call_id,
            "completed": True,
            "status": "busy",
            "queue_status": "complete",
        }
        body, signature = signed(sandbox.webhook_secret, payload)

        first = await r.webhooks.handle(body, signature)
        after_first = await event_count(r.ledger)
        again = await r.webhooks.handle(body, signature)

        assert (first.result, first.http_status, first.state) == ("accepted", 200, "completed")
        assert (again.result, again.http_status) == ("replay", 200)
        assert await event_count(r.ledger) == after_first
        assert json.loads((await rows(r.ledger))["req-0"].outcome)["status"] == "busy"


async def test_live_events_unknown_calls_and_bad_json_are_answered_without_change(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox) as r:
        secret = sandbox.webhook_secret
        live = {
            "message": "Call connected",
            "call_id": "c1",
            "category": "call",
            "log_level": "info",
        }
        stranger = {"call_id": "c-unknown", "completed": True, "status": "completed"}

        results = [
            await r.webhooks.handle(*signed(secret, live)),
            await r.webhooks.handle(*signed(secret, stranger)),
            await r.webhooks.handle(
                b"{not json", hmac.new(secret.encode(), b"{not json", hashlib.sha256).hexdigest()
            ),
        ]

        assert [(x.result, x.http_status) for x in results] == [
            ("ignored", 200),
            ("unknown_call", 200),
            ("invalid", 400),
        ]
        assert await event_count(r.ledger) == 0


async def test_an_unknown_dial_is_settled_by_its_webhook_through_metadata(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)
    async with rig(sqlite_url, sandbox) as r:
        await accept(r, 1)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        assert (await rows(r.ledger))["req-0"].state in {"unknown", "completed", "failed"}

        await wait_for(lambda: all_final(r.ledger, 1))

        [truth] = await sandbox.aground_truth()
        assert (await rows(r.ledger))["req-0"].call_id == truth["call_id"]
        assert len(await sandbox.aground_truth()) == 1


async def test_the_outcome_is_relayed_byte_for_byte_to_the_publisher_webhook(
    sqlite_url: str, sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    publisher_url = f"{webhook_receiver.url}/publisher"
    async with rig(sqlite_url, sandbox) as r:
        await r.ledger.accept_calls([new_call(0, publisher_url)], datetime.now(UTC))
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        await wait_for(lambda: all_final(r.ledger, 1))
        await r.webhooks.aclose()  # waits for the relay in flight

        [received] = webhook_receiver.received
        [delivery] = [d for d in await sandbox.awebhooks() if d.get("delivered")]
        assert received.path == "/publisher"
        assert received.signature_valid(sandbox.webhook_secret)
        assert json.loads(received.body)["call_id"] == delivery["call_id"]
        assert sample(r.metrics, "dialer_webhook_relays_total", result="delivered") == 1


async def test_a_failing_publisher_webhook_does_not_fail_ours(
    sqlite_url: str, sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.status_codes = [500]
    await sandbox.aset_faults(webhook_loss_share=1.0)
    async with rig(sqlite_url, sandbox) as r:
        await r.ledger.accept_calls([new_call(0, f"{webhook_receiver.url}/p")], datetime.now(UTC))
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        call_id = (await rows(r.ledger))["req-0"].call_id
        payload = {"call_id": call_id, "completed": True, "status": "completed"}

        result = await r.webhooks.handle(*signed(sandbox.webhook_secret, payload))
        await r.webhooks.aclose()

        assert (result.result, result.http_status) == ("accepted", 200)
        assert len(webhook_receiver.received) == 1
        assert sample(r.metrics, "dialer_webhook_relays_total", result="refused") == 1


async def test_polling_waits_for_a_live_call_and_survives_read_errors(
    sqlite_url: str, sandbox_factory: SandboxFactory
) -> None:
    # On a real-time clock the call stays live (21 s at least) until the test stops it.
    sandbox = sandbox_factory(clock_speed=1.0, webhook_loss_share=1.0)
    await sandbox.aset_outcomes(human=1, voicemail=0, no_answer=0, busy=0, failed=0)
    async with rig(sqlite_url, sandbox, outcome_overdue_s=0.01) as r:
        await accept(r, 1)
        await r.dispatcher.run_once()
        await r.dispatcher.join()
        await wait_for(lambda: look_due(r))

        assert await r.poller.run_once() == 0  # still ringing or talking: postponed
        assert (await rows(r.ledger))["req-0"].state == "queued"
        await sandbox.aset_faults(read_error_5xx_share=1.0)
        await wait_for(lambda: look_due(r))
        due_at = (await rows(r.ledger))["req-0"].next_check_at
        assert await r.poller.run_once() == 0  # Bland's reads fail: postponed, not lost
        assert (await rows(r.ledger))["req-0"].next_check_at > due_at
        await sandbox.aset_faults(read_error_5xx_share=0.0)
        assert await r.bland.stop_call((await rows(r.ledger))["req-0"].call_id)  # it ends now
        await r.poller.start()
        await wait_for(lambda: all_final(r.ledger, 1))

        assert json.loads((await rows(r.ledger))["req-0"].outcome)["source"] == "poll"


async def test_a_signed_deeply_nested_webhook_is_400_never_500(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    async with rig(sqlite_url, sandbox) as r:
        secret = sandbox.webhook_secret
        nested = b'{"call_id": "c-1", "completed": true, "metadata": ' + b"[" * 5000 + b"]" * 5000
        nested += b"}"
        deep: dict[str, Any] = {}
        for _ in range(100):  # readable by json.loads, too deep to be trusted
            deep = {"a": deep}
        shallow_but_deep = {"call_id": "c-1", "completed": True, "metadata": deep}
        url = r.settings.webhook_url or ""
        async with httpx.AsyncClient(timeout=10) as http:
            answers = [
                await http.post(url, content=body, headers={"X-Webhook-Signature": signature})
                for body, signature in (
                    (nested, hmac.new(secret.encode(), nested, hashlib.sha256).hexdigest()),
                    signed(secret, shallow_but_deep),
                )
            ]

        assert [a.status_code for a in answers] == [400, 400]
        assert await event_count(r.ledger) == 0
