"""Limits and compliance end to end: the dispatcher, the ledger and the sandbox over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from schemas.envelope import DialerOptions
from service.dialing.windows import zone
from service.ledger import NewCall
from service.ledger.tables import attempts
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import publish_json
from tests.support.ledger import rows
from tests.support.rig import rig
from tests.support.sandbox import SandboxProcess
from tests.support.stack import build_stack

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


class ScaledClock:
    """Simulated time that runs `speed` times faster than real time from `start`."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self.real0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.real0) * self.speed)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = DEADLINE_S) -> None:
    """Poll `check` until it holds (or fail at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def request(rid: str, phone: str) -> NewCall:
    """A due request."""
    return NewCall(
        request_id=rid,
        correlation_id=None,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Hello."},
        options=DialerOptions(),
        publisher_webhook=None,
    )


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value (0 when absent)."""
    return registry.get_sample_value(name, labels) or 0.0


async def test_deferred_requests_are_dialed_within_a_second_of_the_opening(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    speed = 60.0  # one real second is a simulated minute
    opening = datetime(2026, 6, 2, 8, 0, tzinfo=zone("America/New_York")).astimezone(UTC)
    clock = ScaledClock(opening - timedelta(seconds=45), speed)
    overrides: dict[str, Any] = {
        "calling_window": "08:00-21:00",
        "max_calls_per_number_24h": 3,
        "dispatch_idle_s": 0.05,
    }
    async with rig(sqlite_url, sandbox, clock=clock, **overrides) as parts:
        calls = [request(f"d{i}", f"+1212555{i:04d}") for i in range(5)]
        await parts.ledger.accept_calls(calls, clock())
        await parts.dispatcher.start()

        async def all_queued() -> bool:
            return all(r.state == "queued" for r in (await rows(parts.ledger)).values())

        await until(all_queued)
        async with parts.ledger.engine.connect() as conn:
            started = [r.started_at for r in await conn.execute(select(attempts))]
        deferred = metric(
            parts.metrics.registry, "dialer_calls_deferred_total", reason="calling_window"
        )
    assert len(started) == 5
    assert min(started) >= opening  # 0 calls before the window opens
    late_s = (max(started) - opening).total_seconds() / speed
    assert late_s <= 1.0, f"dialed {late_s:.2f} s (real) after the opening"
    assert deferred >= 5
    assert len(await sandbox.aground_truth()) == 5


async def test_a_five_second_429_storm_fails_nothing_and_spends_no_retry_budget(
    sqlite_url: str, sandbox: SandboxProcess
) -> None:
    overrides: dict[str, Any] = {
        "dispatch_idle_s": 0.02,
        "retry_backoff_base_s": 0.05,
        "retry_backoff_max_s": 0.5,
        "pause_on_429_s": 0.2,
        "max_transient_retries": 0,  # any spent budget would fail the request
        "max_concurrent_calls": 100,  # no webhooks here: queued calls keep their slots
    }
    await sandbox.aset_faults(rate_limit_429_share=1.0)
    async with rig(sqlite_url, sandbox, **overrides) as parts:
        registry = parts.metrics.registry
        await parts.ledger.accept_calls(
            [request(f"s{i}", f"+1415555{i:04d}") for i in range(20)], parts.clock()
        )
        await parts.dispatcher.start()
        storm_started = time.monotonic()
        lowest_pace = 1.0

        async def storm_over() -> bool:
            nonlocal lowest_pace
            lowest_pace = min(lowest_pace, metric(registry, "dialer_pace_factor"))
            return time.monotonic() - storm_started >= 5.0

        await until(storm_over)
        refused = metric(registry, "dialer_bland_429_total", kind="rate_limit")
        await sandbox.aset_faults(rate_limit_429_share=0.0)

        async def all_queued() -> bool:
            found = (await rows(parts.ledger)).values()
            return all(r.state in ("queued", "completed") for r in found)

        await until(all_queued)
        found = (await rows(parts.ledger)).values()
    assert refused > 0
    assert lowest_pace < 1.0  # repeated 429s lowered the pace, visibly
    assert [r.transient_retries for r in found] == [0] * 20
    assert not [r for r in found if r.state == "failed"]
    assert len(await sandbox.aground_truth()) == 20


async def test_an_opt_out_through_the_bus_after_acceptance_prevents_the_call(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess
) -> None:
    settings = Settings(
        prefix=broker.prefix,
        amqp_url=broker.url,
        database_url=sqlite_url,
        bland_base_url=sandbox.base_url,
        bland_api_key=sandbox.api_key,
        calling_window="00:00-24:00",
    )
    stack = await build_stack(settings)
    try:
        phone = "+14155550123"
        await publish_json(settings, {"phone_number": phone, "task": "Hi."}, message_id="c-1")
        await stack.tap.wait_for(lambda seen: any(s.routing_key == "call.accepted" for s in seen))
        await publish_json(
            settings,
            {"phone_number": "415-555-0123", "reason": "asked us to stop"},
            routing_key="dnc.add",
            message_id="dnc-1",
            correlation_id="opt-out-7",
        )
        seen = await stack.tap.wait_for(
            lambda seen: any(s.routing_key == "dnc.updated" for s in seen)
        )
        (ack,) = [s for s in seen if s.routing_key == "dnc.updated"]
        assert ack.body["phone_number"] == phone
        assert (ack.body["listed"], ack.body["changed"]) == (True, True)
        assert ack.body["correlation_id"] == "opt-out-7"
        await stack.parts.dispatcher.run_once()
        seen = await stack.tap.wait_for(
            lambda seen: any(s.routing_key == "call.suppressed" for s in seen)
        )
        (suppressed,) = [s for s in seen if s.routing_key == "call.suppressed"]
        assert suppressed.body["request_id"] == "c-1"
        assert suppressed.body["reason"] == "do_not_call"
        await publish_json(settings, {"phone_number": "+1 555"}, routing_key="dnc.remove")
        seen = await stack.tap.wait_for(
            lambda seen: any(s.routing_key == "call.rejected" for s in seen)
        )
        (rejected,) = [s for s in seen if s.routing_key == "call.rejected"]
        assert "phone_number" in rejected.body["errors"][0]
    finally:
        await stack.close()
    assert await sandbox.aground_truth() == []
