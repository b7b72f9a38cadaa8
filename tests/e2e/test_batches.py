"""Batches end to end: `dialer serve` as a process, the real broker, the sandbox over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.support.bus import Seen, Tap
from tests.support.sandbox import SandboxFactory, SandboxProcess
from tests.support.service import (
    FAST_SANDBOX,
    FINAL_EVENTS,
    ServiceProcess,
    StartService,
    call_requests,
    calls_by_request,
    fictional_numbers,
    publish_many,
    settled,
)

pytestmark = [pytest.mark.integration]
SEED = Path(__file__).parents[2] / "schemas" / "examples" / "renewal-reminder-batch.json"
RECIPIENT_FINALS = (*FINAL_EVENTS, "call.rejected")
# Region rules off: area code 305 (Florida) would wait for its own 08:00-20:00 window.
BATCH_ENV = {
    "DIALER_BATCH_SETTLE_INTERVAL_S": "0.2",
    "DIALER_BATCH_POLL_INTERVAL_S": "0.5",
    "DIALER_REGION_RULES": "{}",
}
MODES = ["expand", "bland"]
ENV_OF = {
    "expand": {"DIALER_BATCH_DISPATCH": "expand"},
    "bland": {"DIALER_BATCH_DISPATCH": "bland"},
    "bland-v1": {"DIALER_BATCH_DISPATCH": "bland", "DIALER_BLAND_BATCHES_API": "v1"},
}


@dataclass(frozen=True)
class World:
    """A tap, the bus, a ledger URL and a way to start services: what each test needs."""

    tap: Tap
    bus: Settings
    database_url: str
    start: StartService


@pytest.fixture
def world(sqlite_url: str, tap: Tap, bus_settings: Settings, start: StartService) -> World:
    return World(tap, bus_settings, sqlite_url, start)


def seed_batch(count: int = 2) -> dict[str, Any]:
    """The seed tutorial's batch, its first `count` recipients, on valid fictional numbers."""
    body: dict[str, Any] = json.loads(SEED.read_text())
    body["call_data"] = body["call_data"][:count]
    for entry, number in zip(body["call_data"], fictional_numbers(count), strict=True):
        entry["phone_number"] = number
    return body


def big_batch(count: int, invalid: set[int]) -> dict[str, Any]:
    """The seed's shape with `count` recipients; those at `invalid` have unusable numbers."""
    body = seed_batch(1)
    template = body["call_data"][0]
    body["call_data"] = [
        {**template, "name": f"Person {i}", "phone_number": "12345" if i in invalid else number}
        for i, number in enumerate(fictional_numbers(count))
    ]
    return body


async def publish_batch(
    settings: Settings, request_id: str, body: dict[str, Any], kind: str = "batch.create"
) -> None:
    await publish_many(settings, [(request_id, json.dumps(body).encode())], routing_key=kind)


def of_batch(seen: list[Seen], batch_request_id: str, *kinds: str) -> list[dict[str, Any]]:
    """Event bodies of this batch request (per recipient or the batch's own), in order."""
    return [
        s.body
        for s in seen
        if s.routing_key in kinds and s.body.get("batch_request_id") == batch_request_id
    ]


def completed(batch_request_id: str) -> Any:
    return lambda seen: bool(of_batch(seen, batch_request_id, "batch.completed"))


def by_index(bodies: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(b["recipient_index"]): b for b in bodies}


def assert_dispatch(mode: str, brid: str, seen: list[Seen], truth: list[dict[str, Any]]) -> None:
    """bland: every call came from a Bland batch named by a batch.queued; expand: none did."""
    bland_ids = {c["batch_id"] for c in truth}
    queued = of_batch(seen, brid, "batch.queued")
    if mode == "expand":
        assert bland_ids == {None}
        assert queued == []
        return
    assert None not in bland_ids
    assert all(str(i).endswith("-gen-batch") == (mode == "bland-v1") for i in bland_ids)
    # A batch whose answer was lost (a read timeout on a loaded machine) has no batch.queued:
    # its recipients were unknown outcomes, found by their webhooks, never sent again.
    assert queued
    assert {q["batch_id"] for q in queued} <= bland_ids
    assert sum(q["recipients"] for q in queued) <= len(truth)


@pytest.mark.parametrize("mode", [*MODES, "bland-v1"])
async def test_the_seed_example_makes_two_calls_with_the_placeholders_filled(
    mode: str, fast_sandbox: SandboxProcess, world: World
) -> None:
    await asyncio.to_thread(
        world.start, world.database_url, fast_sandbox, **ENV_OF[mode], **BATCH_ENV
    )
    brid = f"seed-{uuid.uuid4().hex}"

    await publish_batch(world.bus, brid, seed_batch(2))
    await world.tap.wait_for(completed(brid), timeout_s=60)

    truth = await fast_sandbox.aground_truth()
    assert len(truth) == 2
    queued = by_index(of_batch(world.tap.seen, brid, "call.queued"))
    assert set(queued) == {0, 1}
    by_call = {c["call_id"]: c for c in truth}
    assert set(by_call) == {q["call_id"] for q in queued.values()}
    tasks = {i: by_call[q["call_id"]]["body"]["task"] for i, q in queued.items()}
    assert tasks[0].startswith("You are calling Maria Lopez to remind them their Home Plus")
    assert "James Carter" in tasks[1]
    assert "{{" not in tasks[0] + tasks[1]
    accepted = of_batch(world.tap.seen, brid, "batch.accepted")
    dispatch = mode.split("-", maxsplit=1)[0]
    assert [(a["recipients"], a["rejected"], a["dispatch"]) for a in accepted] == [(2, 0, dispatch)]
    finals = by_index(of_batch(world.tap.seen, brid, *FINAL_EVENTS))
    assert set(finals) == {0, 1}
    assert_dispatch(mode, brid, world.tap.seen, truth)
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    assert done["calls_total"] == 2
    assert done["calls_successful"] + done["calls_failed"] == 2
    assert done["correlation_id"] is None
    assert done["request_id"] == brid


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_a_thousand_recipients_with_ten_bad_numbers_and_a_republish(
    mode: str, fast_sandbox: SandboxProcess, world: World
) -> None:
    await asyncio.to_thread(
        world.start, world.database_url, fast_sandbox,
        DIALER_BATCH_DISPATCH=mode, DIALER_MAX_CONCURRENT_CALLS="200", **BATCH_ENV,
    )  # fmt: skip
    invalid = set(range(5, 1000, 100))
    brid = f"big-{uuid.uuid4().hex}"
    body = big_batch(1000, invalid)

    await publish_batch(world.bus, brid, body)
    await world.tap.wait_for(completed(brid), timeout_s=240)

    truth = await fast_sandbox.aground_truth()
    per_request = calls_by_request(truth)
    assert len(truth) == 990
    assert max(per_request.values()) == 1
    assert_dispatch(mode, brid, world.tap.seen, truth)
    rejected = by_index(of_batch(world.tap.seen, brid, "call.rejected"))
    assert set(rejected) == invalid
    assert all(
        r["errors"][0].startswith(f"call_data[{i}].phone_number") for i, r in rejected.items()
    )
    finals = of_batch(world.tap.seen, brid, *RECIPIENT_FINALS)
    assert set(by_index(finals)) == set(range(1000))
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    counts = [
        done[k] for k in ("calls_successful", "calls_failed", "calls_rejected", "calls_canceled")
    ]
    assert done["calls_total"] == 1000 == sum(counts)
    assert done["calls_rejected"] == 10

    seen_before = len(world.tap.seen)
    await publish_batch(world.bus, brid, body)
    await world.tap.wait_for(
        lambda seen: any(
            s.body.get("duplicate") for s in seen[seen_before:] if s.routing_key == "batch.accepted"
        ),
        timeout_s=60,
    )
    assert len(await fast_sandbox.aground_truth()) == 990  # nobody dialed again


@pytest.mark.parametrize("mode", MODES)
async def test_lost_post_call_webhooks_are_made_up_by_polling(
    mode: str, sandbox_factory: SandboxFactory, world: World
) -> None:
    sandbox = sandbox_factory(**FAST_SANDBOX)
    sandbox.set_faults(webhook_loss_share=0.1, webhook_retries=0)
    await asyncio.to_thread(
        world.start, world.database_url, sandbox, DIALER_BATCH_DISPATCH=mode, **BATCH_ENV
    )
    brid = f"lossy-{uuid.uuid4().hex}"

    await publish_batch(world.bus, brid, big_batch(100, set()))
    await world.tap.wait_for(completed(brid), timeout_s=120)

    finals = of_batch(world.tap.seen, brid, *FINAL_EVENTS)
    assert set(by_index(finals)) == set(range(100))
    sources = Counter(f.get("source") for f in finals)
    assert sources["poll"] > 0  # some outcomes came from polls: their webhooks were lost
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    assert done["calls_total"] == 100 == done["calls_successful"] + done["calls_failed"]


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_halfway_dials_nobody_after_the_cancel(
    mode: str, sandbox_factory: SandboxFactory, world: World
) -> None:
    sandbox = sandbox_factory(clock_speed=60.0, plan="enterprise", same_number_window_s=0)
    await asyncio.to_thread(
        world.start,
        world.database_url,
        sandbox,
        DIALER_BATCH_DISPATCH=mode,
        DIALER_MAX_CONCURRENT_CALLS="2",
        **BATCH_ENV,
    )
    brid = f"slow-{uuid.uuid4().hex}"
    await publish_batch(world.bus, brid, big_batch(40, set()))
    await world.tap.wait_for(
        lambda seen: len(of_batch(seen, brid, "call.queued")) >= 4, timeout_s=60
    )

    await publish_batch(world.bus, f"cancel-{brid}", {"request_id": brid}, "batch.cancel")
    await world.tap.wait_for(completed(brid), timeout_s=120)

    truth = await sandbox.aground_truth()
    dialed = set(calls_by_request(truth))
    canceled = of_batch(world.tap.seen, brid, "call.canceled")
    never_dialed = {c["request_id"] for c in canceled if c["call_id"] is None}
    assert len(never_dialed) >= 30  # the cancel came early
    assert not dialed & never_dialed
    assert len(dialed) + len(never_dialed) == 40
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    assert done["canceled"] is True
    assert done["calls_total"] == 40
    assert done["calls_canceled"] >= len(never_dialed)


async def test_coalescing_sends_single_calls_as_few_bland_batches(
    fast_sandbox: SandboxProcess, world: World
) -> None:
    await asyncio.to_thread(
        world.start, world.database_url, fast_sandbox,
        DIALER_COALESCE_WINDOW_S="0.3", DIALER_DISPATCH_BATCH_SIZE="100", **BATCH_ENV,
    )  # fmt: skip
    requests = call_requests(60, id_prefix="single")
    ids = {request_id for request_id, _ in requests}

    await publish_many(world.bus, requests)
    await world.tap.wait_for(lambda seen: settled(seen, ids), timeout_s=60)

    truth = await fast_sandbox.aground_truth()
    assert calls_by_request(truth) == dict.fromkeys(ids, 1)
    bland_batches = {c["batch_id"] for c in truth}
    assert None not in bland_batches
    assert len(bland_batches) <= 10  # 60 calls, a handful of API requests
    queued = {s.body["request_id"]: s.body["call_id"] for s in world.tap.of("call.queued")}
    assert set(queued) == ids


@pytest.mark.parametrize("fault", ["drop_share", "error_5xx_share"])
async def test_a_bland_batch_whose_answer_is_lost_is_looked_up_not_resent(
    fault: str, fast_sandbox: SandboxProcess, world: World
) -> None:
    """drop: Bland made the calls, the answer was lost; 5xx: nothing was made. Either way
    each recipient is called exactly once."""
    fast_sandbox.set_faults(**{fault: 1.0})
    service = await asyncio.to_thread(
        world.start, world.database_url, fast_sandbox, DIALER_BATCH_DISPATCH="bland", **BATCH_ENV
    )
    brid = f"lost-{uuid.uuid4().hex}"
    await publish_batch(world.bus, brid, big_batch(10, set()))
    sent = await wait_batch_posts(service, 1)

    fast_sandbox.set_faults(**{fault: 0.0})
    await world.tap.wait_for(completed(brid), timeout_s=120)

    truth = await fast_sandbox.aground_truth()
    assert calls_by_request(truth) == {f"{brid}:{i}": 1 for i in range(10)}
    assert sent >= 1
    # 5xx: nothing was made, so after the lookup found no call the recipients went again.
    assert await wait_batch_posts(service, 2 if fault == "error_5xx_share" else 1) >= 1
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    assert done["calls_total"] == 10 == done["calls_successful"] + done["calls_failed"]


async def wait_batch_posts(service: ServiceProcess, count: int, timeout_s: float = 30) -> int:
    """Until the service has sent `count` POST /v2/batches/create; how many it sent."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    pattern = r'^dialer_bland_request_seconds_count\{endpoint="create_batch"[^}]*\} ([0-9.]+)$'
    while True:
        text = await asyncio.to_thread(service.metrics)
        posts = int(sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE)))
        if posts >= count:
            return posts
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{posts} batch creates after {timeout_s} s")
        await asyncio.sleep(0.05)


async def test_the_do_not_call_list_applies_to_each_recipient(
    fast_sandbox: SandboxProcess, world: World
) -> None:
    await asyncio.to_thread(world.start, world.database_url, fast_sandbox, **BATCH_ENV)
    body = big_batch(3, set())
    listed = body["call_data"][1]["phone_number"]
    await publish_batch(world.bus, f"dnc-{uuid.uuid4().hex}", {"phone_number": listed}, "dnc.add")
    await world.tap.wait_for(lambda seen: any(s.routing_key == "dnc.updated" for s in seen), 30)
    brid = f"listed-{uuid.uuid4().hex}"

    await publish_batch(world.bus, brid, body)
    await world.tap.wait_for(completed(brid), timeout_s=60)

    truth = await fast_sandbox.aground_truth()
    assert listed not in {c["phone_number"] for c in truth}
    assert len(truth) == 2
    suppressed = by_index(of_batch(world.tap.seen, brid, "call.suppressed"))
    assert set(suppressed) == {1}
    done = of_batch(world.tap.seen, brid, "batch.completed")[-1]
    assert (done["calls_total"], done["calls_suppressed"]) == (3, 1)
