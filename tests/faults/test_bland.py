"""Bland misbehaves.

One run mixes three faults on `POST /v1/calls`, each on about a tenth of the requests:
- 500 (the sandbox's error_5xx_share): nothing was recorded, but the service cannot know it;
  the outcome is unknown. The one rule for unknown outcomes applies: Bland's list, read after
  the grace, shows no call carrying the request id, so it is dialed again, at most
  DIALER_MAX_UNKNOWN_REDIALS (1) times; a redial that meets a 500 too ends `call.unresolved`.
  Never two calls for one person;
- the connection dropped after the call was recorded (drop_share): the call is found by its
  request id (reconciliation, or its webhook arriving first): `call.queued`, then the
  outcome; never dialed again;
- a timeout after recording: the BlandLink withholds the answer, the service's read timeout
  fires; same as a drop.

A second run takes Bland down: the sandbox first refuses new calls (429) until the calls it
has are over (a restarted sandbox forgets its calls, real Bland does not), is then stopped for
8 s while requests keep coming (connection refused: retried, nothing was sent), and a new one is
started on the same port. Calls are counted per sandbox lifetime and summed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call, assert_settled_once
from tests.faults.launcher import poll
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.tally import Tally, calls_per_request

pytestmark = [pytest.mark.faults]

REQUESTS = 300
DOWN_S = 8.0


@dataclass
class BlandRun:
    """The tally, the per-request ground truth, and which request met which fault."""

    tally: Tally
    calls: Counter[str] = field(default_factory=Counter)
    finals: dict[str, set[str]] = field(default_factory=dict)
    queued_call_ids: dict[str, str] = field(default_factory=dict)  # request id -> call id
    faulted: dict[str, set[str]] = field(default_factory=dict)  # fault -> request ids
    posts_per_request: Counter[str] = field(default_factory=Counter)
    failed_posts: Counter[str] = field(default_factory=Counter)  # answered 500, nothing recorded


async def _mixed_faults(rig: Rig) -> BlandRun:
    await rig.boot(
        "sqlite", through_link=True, sandbox={"error_5xx_share": 0.1, "drop_share": 0.1, "seed": 11}
    )
    assert rig.bland_link is not None
    assert rig.sandbox is not None
    rig.bland_link.configure(stall_share=0.1)
    requests = rig.make_requests(REQUESTS, id_prefix="bl")
    await rig.publish(requests)
    settled = await rig.settle(timeout_s=120)

    by_number = {r.phone_number: r.request_id for r in requests}
    attempts = await rig.sandbox.process.arequests()
    faulted: dict[str, set[str]] = {"5xx": set(), "dropped": set(), "stalled": set()}
    posts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for attempt in attempts:
        request_id = by_number.get(attempt.get("phone_number"))
        if request_id is None:
            continue
        posts[request_id] += 1
        if attempt["outcome"] == "fault_5xx":
            faulted["5xx"].add(request_id)
            failed[request_id] += 1
        elif attempt["outcome"] == "dropped":
            faulted["dropped"].add(request_id)
    # A withheld answer is a timeout after recording only when the sandbox recorded the call
    # (a 500 withheld is still a 500: nothing recorded).
    faulted["stalled"] = set(rig.bland_link.stalled) - faulted["5xx"] - faulted["dropped"]
    truths = await rig.sandbox.ground_truths()
    queued = rig.recorder.first("call.queued")
    tally = await rig.tally(
        settled=settled,
        faulted={k: len(v) for k, v in faulted.items()},
        posts=len(attempts),
    )
    return BlandRun(
        tally=tally,
        calls=calls_per_request(truths),
        finals=rig.recorder.finals(),
        queued_call_ids={rid: str(e.body.get("call_id")) for rid, e in queued.items()},
        faulted=faulted,
        posts_per_request=posts,
        failed_posts=failed,
    )


async def _bland_down(rig: Rig) -> BlandRun:
    # While Bland is down, connection failures are retried with backoff (max 0.5 s here):
    # enough retries to outlast the outage, so every request is dialed once it is back.
    await rig.boot("sqlite", DIALER_MAX_TRANSIENT_RETRIES="200")
    sandbox = rig.sandbox
    assert sandbox is not None
    requests = rig.make_requests(REQUESTS, id_prefix="dn")
    publishing = asyncio.create_task(rig.publish(requests, per_second=30.0))
    await rig.wait_calls(int(0.3 * REQUESTS), timeout_s=120)

    # Bland stops taking calls, then its calls end and their outcomes are delivered.
    await sandbox.process.aset_faults(rate_limit_429_share=1.0)

    async def drained() -> bool:
        truth = await sandbox.process.aground_truth()
        finals = rig.recorder.finals()
        return all(c["completed"] for c in truth) and all(
            c["metadata"]["dialer_request_id"] in finals for c in truth
        )

    await poll(
        drained, timeout_s=60, what="the sandbox's calls to end and be settled", interval_s=0.2
    )
    await sandbox.stop()  # ground truth of this lifetime kept
    down_at = time.monotonic()
    await asyncio.sleep(DOWN_S)  # the outage's length
    await sandbox.start()  # same port: the service's base URL still points there
    down_s = time.monotonic() - down_at
    await publishing
    settled = await rig.settle(timeout_s=120)
    tally = await rig.tally(
        settled=settled,
        bland_down_s=round(down_s, 1),
        sandbox_lifetimes=[len(t) for t in await sandbox.ground_truths()],
    )
    return BlandRun(
        tally=tally,
        calls=calls_per_request(await sandbox.ground_truths()),
        finals=rig.recorder.finals(),
    )


MIXED = Scenario("bland 500 / drop / timeout after recording", _mixed_faults)
DOWN = Scenario("bland down 8 s, sandbox restarted", _bland_down)


@pytest.mark.scenario(MIXED)
def test_no_request_is_lost_or_dialed_twice_when_bland_fails(outcome: BlandRun) -> None:
    assert_settled_once(outcome.tally)
    for fault, ids in outcome.faulted.items():
        assert len(ids) >= 10, f"the {fault} fault barely happened: {len(ids)}"


@pytest.mark.scenario(MIXED)
def test_a_500_is_redialed_only_when_bland_has_no_call_and_at_most_once(
    outcome: BlandRun,
) -> None:
    redialed = 0
    for request_id in outcome.faulted["5xx"]:
        posts, calls = outcome.posts_per_request[request_id], outcome.calls[request_id]
        finals = outcome.finals.get(request_id)
        assert posts <= 2, (request_id, posts)  # the first POST and at most one redial
        assert calls <= 1, (request_id, calls)  # never two calls for one person
        redialed += posts - 1
        if calls == 0:  # every POST met a 500: Bland never had the call
            assert finals == {"call.unresolved"}, (request_id, finals)
        else:
            assert finals, request_id
            assert "call.unresolved" not in finals, (request_id, finals)
            assert outcome.queued_call_ids.get(request_id), request_id
    assert redialed >= 1, "no 500 was ever followed by the rule's redial"


@pytest.mark.parametrize("fault", ["dropped", "stalled"])
@pytest.mark.scenario(MIXED)
def test_a_call_recorded_before_the_answer_was_lost_is_found_and_settled(
    outcome: BlandRun, fault: str
) -> None:
    for request_id in outcome.faulted[fault]:
        assert outcome.calls[request_id] == 1, request_id
        # Bland had the call: no POST after the one it recorded (a 500 before it may be redialed)
        posts = outcome.posts_per_request[request_id] - outcome.failed_posts[request_id]
        assert posts == 1, (request_id, posts)
        assert outcome.queued_call_ids.get(request_id), request_id
        finals = outcome.finals.get(request_id, set())
        assert finals, request_id
        assert "call.unresolved" not in finals, (request_id, finals)


@pytest.mark.scenario(DOWN)
def test_bland_down_then_back_loses_nothing_and_dials_nobody_twice(outcome: BlandRun) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
