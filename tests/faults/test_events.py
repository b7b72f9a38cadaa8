"""Nobody is bound to `dialer.events` for a while.

What the contract promises (DESIGN §3, §6; README metrics): events go out with publisher
confirms and `mandatory`, returns raised. An event the broker returns as unroutable is counted
in `dialer_events_unroutable_total{target="events"}` and marked sent, not retried: holding it
would block every later event for as long as nobody subscribes. So events published while
nobody is bound are gone from `dialer.events` by design, and this scenario does not expect them
there later. It asserts instead:

- the requests published meanwhile are still dialed once and settled: their events reach the
  publisher through `reply_to` (every event is also sent there), which the tally reads;
- every event that went only to `reply_to` was counted as unroutable, one for one;
- the relay did not stall: the outbox drains while nobody is bound;
- once a queue is bound, later requests' events arrive on `dialer.events` as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call
from tests.faults.launcher import poll
from tests.faults.rig import Rig, metric_values
from tests.faults.scenarios import Scenario
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

UNBOUND = 200
BOUND = 100


@dataclass
class UnroutableRun:
    """What went where."""

    tally: Tally
    unroutable_counted: float
    only_via_reply: int
    via_events_while_unbound: int
    outbox_pending_while_unbound: float
    bound_ids_via_events: int


async def _unroutable(rig: Rig) -> UnroutableRun:
    (service,) = await rig.boot("sqlite")
    unbound = rig.make_requests(
        UNBOUND, id_prefix="ub", properties={"reply_to": rig.recorder.reply_queue}
    )
    await rig.publish(unbound)
    await rig.settle(timeout_s=90, ids=[r.request_id for r in unbound])

    async def outbox_empty() -> bool:
        values = metric_values(await service.metrics(), "dialer_outbox_pending")
        return values.get("") == 0.0

    await poll(
        outbox_empty, timeout_s=30, what="the outbox to drain while nobody is bound", interval_s=0.5
    )
    text = await service.metrics()
    pending_unbound = metric_values(text, "dialer_outbox_pending").get("", -1.0)
    via_events_unbound = sum(1 for e in rig.recorder.events.values() if e.via == "events")
    bind_at = time.monotonic()
    await rig.recorder.bind()
    bound = rig.make_requests(BOUND, id_prefix="bd", offset=UNBOUND)
    await rig.publish(bound)
    settled = await rig.settle(timeout_s=90)

    unroutable = metric_values(await service.metrics(), "dialer_events_unroutable_total")
    counted = unroutable.get('{target="events"}', 0.0)
    before_bind = [e for e in rig.recorder.events.values() if e.at < bind_at]
    only_reply = sum(1 for e in before_bind if e.via == "reply_to")
    bound_ids = {r.request_id for r in bound}
    bound_via_events = {
        e.request_id
        for e in rig.recorder.events.values()
        if e.via == "events" and e.request_id in bound_ids
    }
    tally = await rig.tally(
        settled=settled,
        unroutable_counted=counted,
        events_only_via_reply_to=only_reply,
        outbox_pending_while_unbound=pending_unbound,
    )
    return UnroutableRun(
        tally, counted, only_reply, via_events_unbound, pending_unbound, len(bound_via_events)
    )


UNROUTABLE = Scenario(
    "events unroutable (no queue bound)", _unroutable, rig_options={"bind_events": False}
)


@pytest.mark.scenario(UNROUTABLE)
def test_requests_are_settled_while_nobody_listens_on_the_events_exchange(
    outcome: UnroutableRun,
) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)


@pytest.mark.scenario(UNROUTABLE)
def test_unroutable_events_are_counted_one_for_one_and_the_outbox_drains(
    outcome: UnroutableRun,
) -> None:
    assert outcome.via_events_while_unbound == 0  # nobody was bound: nothing could arrive there
    assert outcome.only_via_reply >= 3 * UNBOUND  # accepted, queued and a final, at least
    # One for one in a calm run; an event published again after a lost confirm counts twice.
    assert outcome.unroutable_counted >= outcome.only_via_reply
    assert outcome.outbox_pending_while_unbound == 0


@pytest.mark.scenario(UNROUTABLE)
def test_events_flow_again_once_a_queue_is_bound(outcome: UnroutableRun) -> None:
    assert outcome.bound_ids_via_events == BOUND
