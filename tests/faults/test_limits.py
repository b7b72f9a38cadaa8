"""The limits after a crash: the shared concurrency cap and the do-not-call list survive kill -9.

- **cap 5 through kills**: two replicas share one PostgreSQL and DIALER_MAX_CONCURRENT_CALLS=5;
  calls last 0.5 to 1.5 s at the sandbox (clock x60, 30 to 90 simulated seconds of talk), so
  the cap is always full and a killed replica dies holding slots for calls still live at Bland.
  Those slots are ledger rows: they stay taken until the call's outcome arrives (webhook or
  poll, to whichever replica) or the lease runs out, never double-booked by the survivor or the
  restarted process. The sandbox's high-water mark of simultaneous live calls
  (`max_live_calls` of `/_sandbox/counts`, from a call's creation to its end) never exceeds 5.
- **do-not-call behind a closed cap**: the cap is 2, held by two calls that talk until they are
  stopped (2 minutes at most); a request for number N is accepted and waits behind the cap; the service is killed;
  `dnc.add` N is published while it is down; it restarts and applies it; then the two calls
  are hung up at the sandbox and the cap opens. N is never dialed and ends `call.suppressed`;
  the requests queued beside it are dialed once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call, rng_for
from tests.faults.launcher import poll
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.faultbus import Request
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

CAP = 5
CAP_REQUESTS = 120
CAP_KILLS = 5
HUMAN_ONLY = {"share_human": 1, "share_voicemail": 0, "share_no_answer": 0, "share_busy": 0}


@dataclass
class CapRun:
    """The tally, the sandbox's concurrency high-water mark and what each kill met."""

    tally: Tally
    max_live_calls: int
    kills: list[dict[str, Any]]


async def _cap_run(rig: Rig) -> CapRun:
    rng = rng_for(rig.name)
    services = await rig.boot(
        "postgres",
        replicas=2,
        through_link=True,  # what a killed process sent still reaches the sandbox
        sandbox={
            "latency_ms": 50,
            "clock_speed": 60.0,
            "min_talk_s": 30.0,
            "max_talk_s": 90.0,
            "share_failed": 0,
            **HUMAN_ONLY,
        },
        DIALER_MAX_CONCURRENT_CALLS=str(CAP),
    )
    assert rig.sandbox is not None
    await rig.publish(rig.make_requests(CAP_REQUESTS, id_prefix="c"))
    step = CAP_REQUESTS // (CAP_KILLS + 1)
    kills: list[dict[str, Any]] = []
    for number in range(CAP_KILLS):
        victim = services[rng.randrange(len(services))]
        await rig.wait_calls((number + 1) * step - rng.randint(0, step // 2), timeout_s=90)
        await asyncio.sleep(rng.uniform(0.0, 0.5))  # the moment itself is drawn at random
        counts = await rig.sandbox.process.acounts()
        await victim.kill9()
        ready_s = await victim.start()
        kills.append(
            {
                "kill": number + 1,
                "replica": victim.name,
                "calls_at_kill": counts["total"],
                "live_at_kill": counts["live_calls"],
                "restart_ready_s": round(ready_s, 2),
            }
        )
    rig.mark(f"{CAP_KILLS} kills done")
    settled = await rig.settle(timeout_s=120)
    counts = await rig.sandbox.process.acounts()
    max_live = int(counts["max_live_calls"])
    tally = await rig.tally(
        settled=settled, max_live_calls=max_live, max_active=counts["max_active"], kills=kills
    )
    return CapRun(tally, max_live, kills)


@dataclass
class DncRun:
    """The tally and the target request's fate."""

    tally: Tally
    target: str
    target_calls: int
    target_finals: set[str]
    suppressed_reason: str | None
    calls_when_dnc_applied: int


async def _stop_calls(rig: Rig, request_ids: list[str]) -> None:
    """Hang up these requests' calls at the sandbox, as the callee would (Bland's stop)."""
    assert rig.sandbox is not None
    sandbox = rig.sandbox.process
    truth = await sandbox.aground_truth()
    call_ids = [
        c["call_id"] for c in truth if c["metadata"].get("dialer_request_id") in request_ids
    ]
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=sandbox.headers) as client:
        for call_id in call_ids:
            (await client.post(f"/v1/calls/{call_id}/stop", timeout=10)).raise_for_status()


async def _dnc_run(rig: Rig) -> DncRun:
    (service,) = await rig.boot(
        "sqlite",
        sandbox={
            # The blockers talk 2 minutes (their max_duration 40 allows it): longer than a
            # restart on a starved machine, so the cap stays closed until they are stopped.
            "clock_speed": 20.0,
            "min_talk_s": 2400.0,
            "max_talk_s": 2400.0,
            "share_failed": 0,
            **HUMAN_ONLY,
        },
        DIALER_MAX_CONCURRENT_CALLS="2",
    )
    assert rig.sandbox is not None
    blockers = rig.make_requests(2, id_prefix="blocker", extra={"max_duration": 40})
    await rig.publish(blockers)
    await rig.wait_calls(2, timeout_s=60)
    # Behind the closed cap: the target and four short calls (max_duration 1: 3 s real).
    queued = rig.make_requests(5, id_prefix="q", offset=2, extra={"max_duration": 1})
    target = queued[0]
    await rig.publish(queued)
    await poll(
        lambda: all(r.request_id in rig.recorder.first("call.accepted") for r in queued),
        timeout_s=60,
        what="the queued requests accepted",
    )
    await service.kill9()
    rig.mark("killed with the target pending behind the cap")
    dnc_id = f"dnc-{uuid.uuid4().hex[:12]}"
    body = {"phone_number": target.phone_number, "reason": "opt-out"}
    await rig.publisher.publish([Request(dnc_id, json.dumps(body).encode(), routing_key="dnc.add")])
    await service.start()
    await poll(
        lambda: dnc_id in rig.recorder.first("dnc.updated"), timeout_s=60, what="dnc.updated"
    )
    calls_then = await rig.calls()
    rig.mark("dnc.add applied; stopping the blockers")
    await _stop_calls(rig, [b.request_id for b in blockers])
    settled = await rig.settle(timeout_s=60)
    calls_now = {
        c["metadata"].get("dialer_request_id") for c in await rig.sandbox.process.aground_truth()
    }
    suppressed = rig.recorder.first("call.suppressed").get(target.request_id)
    tally = await rig.tally(settled=settled, calls_when_dnc_applied=calls_then)
    return DncRun(
        tally,
        target.request_id,
        int(target.request_id in calls_now),
        rig.recorder.finals().get(target.request_id, set()),
        None if suppressed is None else suppressed.body.get("reason"),
        calls_then,
    )


LIMITS_CAP = Scenario("cap 5, kill -9 x5 (2 replicas, postgres)", _cap_run, weight_s=70)
LIMITS_DNC = Scenario("dnc.add behind a closed cap, kill -9 (sqlite)", _dnc_run, weight_s=30)


@pytest.mark.scenario(LIMITS_CAP)
def test_the_cap_holds_at_the_sandbox_through_kills(outcome: CapRun) -> None:
    assert len(outcome.kills) == CAP_KILLS
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
    assert outcome.max_live_calls <= CAP, outcome.kills
    assert outcome.max_live_calls >= CAP - 1  # the cap was reached: the scenario tested something


@pytest.mark.scenario(LIMITS_DNC)
def test_a_number_opted_out_while_waiting_behind_the_cap_is_never_dialed(
    outcome: DncRun,
) -> None:
    assert outcome.calls_when_dnc_applied == 2  # the cap was still closed when it was applied
    assert outcome.target_calls == 0
    assert outcome.target_finals == {"call.suppressed"}
    assert outcome.suppressed_reason == "do_not_call"
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
    assert outcome.tally.calls == outcome.tally.requests - 1
