"""kill -9 while one 1,000-recipient `batch.create` is being written and dispatched.

One batch is published once; the service is killed at random moments while it dials the
recipients and restarted after each kill. The first kill lands within half a second of the
publish (the batch may be half written to the ledger: the redelivery completes it), the others
after a random number of the batch's calls reached the sandbox plus a random fraction of
Bland's answer time, so POSTs are in flight when the process dies.

- `expand` on SQLite: one `POST /v1/calls` per recipient, through the BlandLink (what a killed
  process sent still reaches the sandbox).
- `bland` on PostgreSQL: the recipients go out as `POST /v2/batches/create` of up to 100 call
  objects, answered after 0.3 to 0.8 s, so a kill often lands while a batch POST's outcome is
  unknown: its recipients must be found at Bland (webhooks, `GET /v1/calls?batch_id=`, the
  request id in each call's metadata) and never sent again.

The tally counts each recipient (`<batch request id>:<index>`): every one dialed at most once,
every one with a final event, and exactly one `batch.completed` whose totals add up to 1,000.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call, rng_for
from tests.faults.launcher import poll
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.faultbus import Request
from tests.support.service import fictional_numbers
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

RECIPIENTS = 1000
TOTAL_PARTS = (
    "calls_successful",
    "calls_failed",
    "calls_rejected",
    "calls_canceled",
    "calls_suppressed",
    "calls_expired",
)


@dataclass
class BatchRun:
    """The tally, the batch's `batch.completed` events and what each kill met."""

    tally: Tally
    completed: list[dict[str, Any]]
    kills: list[dict[str, Any]] = field(default_factory=list)


def legacy_batch(count: int) -> dict[str, Any]:
    """The seed tutorial's shape: one prompt with a placeholder, one entry per recipient."""
    return {
        "base_prompt": "Say hello to {{name}} and end the call.",
        "call_data": [
            {"phone_number": number, "name": f"Person {i}"}
            for i, number in enumerate(fictional_numbers(count))
        ],
    }


def v2_batch(count: int) -> dict[str, Any]:
    """Bland's v2 shape: shared `global`, one call object per recipient."""
    return {
        "global": {"task": "Say hello and end the call."},
        "call_objects": [{"phone_number": number} for number in fictional_numbers(count)],
    }


def publish_batch(rig: Rig, body: dict[str, Any], mode: str) -> tuple[str, Request]:
    """The batch request (not published yet); its recipients are counted in the tally."""
    batch_id = f"b-{uuid.uuid4().hex[:16]}"
    body = {**body, "dialer": {"dispatch": mode}}
    rig.expect(
        Request(f"{batch_id}:{index}", b"", phone_number=number)
        for index, number in enumerate(fictional_numbers(RECIPIENTS))
    )
    return batch_id, Request(batch_id, json.dumps(body).encode(), routing_key="batch.create")


def completions(rig: Rig, batch_id: str) -> list[dict[str, Any]]:
    """Every distinct `batch.completed` event of this batch."""
    return [
        e.body for e in rig.recorder.of("batch.completed") if e.body.get("request_id") == batch_id
    ]


async def _batch_run(
    rig: Rig,
    *,
    database: str,
    mode: str,
    kills: int,
    latency_ms: tuple[int, int],
    round_size: int,
) -> BatchRun:
    rng = rng_for(rig.name)
    (service,) = await rig.boot(
        database,
        through_link=True,
        sandbox={"latency_ms": latency_ms[0]},
        DIALER_BATCH_SETTLE_INTERVAL_S="0.2",
        DIALER_BATCH_POLL_INTERVAL_S="0.5",
        DIALER_BLAND_POOL_SIZE=str(round_size),
        DIALER_DISPATCH_BATCH_SIZE=str(round_size),
        DIALER_BLAND_BATCH_CHUNK=str(round_size),
    )
    assert rig.sandbox is not None
    assert rig.bland_link is not None
    body = legacy_batch(RECIPIENTS) if mode == "expand" else v2_batch(RECIPIENTS)
    batch_id, batch = publish_batch(rig, body, mode)
    await rig.publisher.publish([batch])
    rig.mark("batch published")
    step = RECIPIENTS // (kills + 1)
    link = rig.bland_link
    met: list[dict[str, Any]] = []
    for number in range(kills):
        latency = rng.randint(*latency_ms)
        await rig.sandbox.process.aset_faults(latency_ms=latency)
        if number == 0:
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # the moment is drawn: intake or dials
        else:
            await rig.wait_calls(number * step + rng.randint(0, step // 2), timeout_s=240)
            if mode == "bland":  # the kill lands while a batch POST waits for its answer
                await poll(
                    lambda: link.batch_posts_in_flight > 0, timeout_s=120, what="a batch POST"
                )
            await asyncio.sleep(rng.uniform(0.0, 0.8 * latency / 1000))
        calls_at_kill = await rig.calls()
        posts_before = len(link.answered_after_client_died)
        batches_before = len(link.batches_answered_after_client_died)
        await service.kill9()
        ready_s = await service.start()
        met.append(
            {
                "kill": number + 1,
                "latency_ms": latency,
                "calls_at_kill": calls_at_kill,
                "posts_in_flight": len(link.answered_after_client_died) - posts_before,
                "batch_posts_in_flight": len(link.batches_answered_after_client_died)
                - batches_before,
                "restart_ready_s": round(ready_s, 2),
            }
        )
    rig.mark(f"{kills} kills done")
    settled = await rig.settle(timeout_s=120)
    if settled:
        await poll(lambda: bool(completions(rig, batch_id)), timeout_s=30, what="batch.completed")
    done = completions(rig, batch_id)
    tally = await rig.tally(
        settled=settled,
        mode=mode,
        kills=met,
        batch_completed=done,
        batch_posts=len(rig.recorder.of("batch.queued")),
    )
    return BatchRun(tally, done, met)


def assert_batch_completed_once(run: BatchRun) -> None:
    """One `batch.completed`, its totals adding up to every recipient."""
    assert len(run.completed) == 1, run.completed
    (done,) = run.completed
    assert done["calls_total"] == RECIPIENTS, done
    assert sum(int(done.get(part) or 0) for part in TOTAL_PARTS) == RECIPIENTS, done


BATCH_EXPAND = Scenario(
    "batch 1,000 expand, kill -9 x10 (sqlite)",
    lambda rig: _batch_run(
        rig,
        database="sqlite",
        mode="expand",
        kills=10,
        latency_ms=(50, 250),
        round_size=16,  # 16 POSTs at a time, as in the kill -9 scenarios
    ),
    weight_s=80,
)
BATCH_BLAND = Scenario(
    "batch 1,000 bland (v2), kill -9 x6 (postgres)",
    lambda rig: _batch_run(
        rig,
        database="postgres",
        mode="bland",
        kills=6,
        latency_ms=(300, 800),
        round_size=100,  # a claim round of 100 recipients: one v2 batch of 100
    ),
    weight_s=80,
)


@pytest.mark.scenario(BATCH_EXPAND)
def test_a_batch_dispatched_through_ten_kills_dials_each_recipient_once(outcome: BatchRun) -> None:
    assert len(outcome.kills) == 10
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
    assert_batch_completed_once(outcome)


@pytest.mark.scenario(BATCH_BLAND)
def test_bland_batches_cut_by_kills_dial_nobody_twice(outcome: BatchRun) -> None:
    assert len(outcome.kills) == 6
    # Kills met batch POSTs whose outcome the killed process never learned.
    assert sum(k["batch_posts_in_flight"] for k in outcome.kills) >= 1, outcome.kills
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
    assert_batch_completed_once(outcome)
