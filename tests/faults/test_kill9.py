"""kill -9 of the service at 20 random moments during 1,000 requests, restarted after each kill.

The sandbox answers every POST after 50 to 250 ms (a new draw before each kill) and the service
keeps 16 connections to it (dials in waves of up to 16), so a kill lands with POSTs in flight:
some reach Bland after the process died (the sandbox's webhook, retried for about 13 s, or
reconciliation finds their call), some were claimed but never sent (swept as orphans and dialed
once after the grace period), some were answered but not recorded.

The 1,000 requests are published in 20 slices of 50; each kill waits until the sandbox has
recorded a random 1 to 40 calls of the current slice, then a random 0 to 0.3 s: the moment is
random, the replica is always busy dialing when it dies, and with two replicas the survivor
cannot run through all the work while the victim restarts.

On SQLite (one replica), on PostgreSQL (one replica) and with two replicas sharing one
PostgreSQL (the victim is drawn at random). Whatever webhook is still missing is polled.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.checks import (
    assert_dialed_once_or_settled_without_a_call,
    quantiles,
    rng_for,
)
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

REQUESTS = 1000
KILLS = 20
# A small connection pool to Bland: the dispatcher claims only as many rows as it has free
# connections, so dialing is a steady stream of a few POSTs at a time, a slice of 50 takes
# about a second, and at any moment some POSTs are in flight. (A rate limit would not do: its
# sliding window lets dials out in bursts, once a second; few concurrency slots would fill up
# with the claims of killed processes until they are swept.)
POSTS_AT_ONCE = 16
# Bland's answer comes after 50 to 250 ms (a new draw before each kill). With 20 to 100 ms,
# the POSTs of a wave were over in less time than the ledger round trips between two waves,
# and most kills (17 of 20 in one run) found no POST in flight.
LATENCY_MS = (50, 250)


@dataclass
class KillRun:
    """The tally and what each kill met."""

    tally: Tally
    kills: list[dict[str, Any]] = field(default_factory=list)


def _count_log_events(rig: Rig, event: str, key: str | None = None) -> int:
    total = 0
    for service in rig.services:
        for line in service.log_lines():
            if line.get("event") == event:
                total += int(line.get(key, 1)) if key else 1
    return total


async def _kill_run(rig: Rig, *, database: str, replicas: int) -> KillRun:
    rng = rng_for(rig.name)
    services = await rig.boot(
        database,
        replicas=replicas,
        through_link=True,  # what a killed process sent still reaches the sandbox
        sandbox={"latency_ms": LATENCY_MS[0]},
        DIALER_BLAND_POOL_SIZE=str(POSTS_AT_ONCE),
    )
    link = rig.bland_link
    assert link is not None
    requests = rig.make_requests(REQUESTS, id_prefix="k")
    # The load comes in slices, one per kill: the kill lands while its slice is being dialed
    # (a random 1 to 40 of its 50 calls placed), and a surviving replica cannot run through
    # all the work while the victim restarts.
    size = REQUESTS // KILLS
    kills: list[dict[str, Any]] = []
    assert rig.sandbox is not None
    for number in range(KILLS):
        victim = services[rng.randrange(replicas)]
        latency_ms = rng.randint(*LATENCY_MS)
        await rig.sandbox.process.aset_faults(latency_ms=latency_ms)
        await rig.publish(requests[number * size : (number + 1) * size])
        await rig.wait_calls(number * size + rng.randint(1, 40), timeout_s=120)
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # the moment itself is drawn at random
        calls_at_kill = await rig.calls()
        answered_before = len(link.answered_after_client_died)
        await victim.kill9()
        killed_at = time.monotonic()
        ready_s = await victim.start()  # the sandbox answers within 250 ms: all noted by now
        kills.append(
            {
                "kill": number + 1,
                "replica": victim.name,
                "latency_ms": latency_ms,
                "calls_at_kill": calls_at_kill,
                "posts_in_flight": len(link.answered_after_client_died) - answered_before,
                "restart_ready_s": round(ready_s, 2),
                "at_s": round(killed_at - rig.started, 1),
            }
        )
    await rig.publish(requests[KILLS * size :])
    rig.mark("20 kills done")
    settled = await rig.settle(timeout_s=150)
    queued = rig.recorder.first("call.queued")
    reconciled = sum(1 for event in queued.values() if event.body.get("reconciled"))
    tally = await rig.tally(
        settled=settled,
        kills=len(kills),
        calls_at_kills=[k["calls_at_kill"] for k in kills],
        restart_ready_s=quantiles([k["restart_ready_s"] for k in kills]),
        posts_in_flight_at_kills=[k["posts_in_flight"] for k in kills],
        queued_by_reconciliation=reconciled,
        stale_claims_swept=_count_log_events(rig, "stale_dialing_swept", "count"),
        orphans_redialed=_count_log_events(rig, "orphaned_claim_requeued"),
        publisher_retries=rig.publisher.retries,
    )
    return KillRun(tally, kills)


KILL_SQLITE = Scenario(
    "kill -9 x20 (sqlite)",
    lambda rig: _kill_run(rig, database="sqlite", replicas=1),
    weight_s=120,
)
KILL_POSTGRES = Scenario(
    "kill -9 x20 (postgres)",
    lambda rig: _kill_run(rig, database="postgres", replicas=1),
    weight_s=130,
)
KILL_TWO_REPLICAS = Scenario(
    "kill -9 x20 (2 replicas, postgres)",
    lambda rig: _kill_run(rig, database="postgres", replicas=2),
    weight_s=140,
)


@pytest.mark.scenario(KILL_SQLITE)
def test_kill_9_twenty_times_on_sqlite(outcome: KillRun) -> None:
    assert len(outcome.kills) == KILLS
    assert_dialed_once_or_settled_without_a_call(outcome.tally)


@pytest.mark.scenario(KILL_POSTGRES)
def test_kill_9_twenty_times_on_postgres(outcome: KillRun) -> None:
    assert len(outcome.kills) == KILLS
    assert_dialed_once_or_settled_without_a_call(outcome.tally)


@pytest.mark.scenario(KILL_TWO_REPLICAS)
def test_kill_9_twenty_times_with_two_replicas_on_postgres(outcome: KillRun) -> None:
    assert len(outcome.kills) == KILLS
    assert {k["replica"] for k in outcome.kills} == {"a", "b"}
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
