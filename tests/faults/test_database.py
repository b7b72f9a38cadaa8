"""PostgreSQL goes away under load: the service's link to it is held for 10 s (a partition:
queries wait, nothing is lost in transit), later cut (every connection reset, reconnections
refused for 5 s). The service must fail closed (nobody dialed without a ledger), hold its
deliveries, and finish every request once the database is back.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.faults.test_broker import BrokerRun, ReadyzProbe

pytestmark = [pytest.mark.faults]

REQUESTS = 400
PUBLISH_PER_S = 50.0
HOLD_S = 10.0
CUT_S = 5.0


async def _database_outages(rig: Rig) -> BrokerRun:
    (service,) = await rig.boot("postgres")
    probe = ReadyzProbe(service).start()
    publishing = asyncio.create_task(
        rig.publish(rig.make_requests(REQUESTS, id_prefix="db"), per_second=PUBLISH_PER_S)
    )
    windows: dict[str, list[int]] = {}
    calls_during: dict[str, int] = {}
    assert rig.pg_link is not None

    rig.mark("service ready, publishing")
    await rig.wait_calls(int(0.2 * REQUESTS), timeout_s=120)
    start = time.monotonic()
    rig.mark("database link held")
    rig.pg_link.hold()
    before = await rig.calls()
    await asyncio.sleep(HOLD_S)  # the partition's length
    calls_during["hold"] = await rig.calls() - before
    rig.pg_link.restore()
    rig.mark("database link healed")
    windows["hold"] = probe.between(start, time.monotonic())
    await service.wait_ready(timeout_s=60)
    rig.mark("ready again")

    await rig.wait_calls(int(0.6 * REQUESTS), timeout_s=120)
    start = time.monotonic()
    rig.mark("database link cut")
    rig.pg_link.cut()
    before = await rig.calls()
    await asyncio.sleep(CUT_S)  # reconnections are refused this long
    calls_during["cut"] = await rig.calls() - before
    rig.pg_link.restore()
    rig.mark("database link restored")
    windows["cut"] = probe.between(start, time.monotonic())
    await service.wait_ready(timeout_s=60)
    rig.mark("ready again")

    await publishing
    rig.mark("all published")
    settled = await rig.settle(timeout_s=120)
    rig.mark("settled")
    await probe.stop()
    tally = await rig.tally(
        settled=settled,
        readyz_during_hold=sorted(set(windows["hold"])),
        readyz_during_cut=sorted(set(windows["cut"])),
        calls_while_database_away=calls_during,
    )
    return BrokerRun(tally, windows)


DATABASE = Scenario("database partition 10 s + reset", _database_outages, weight_s=60)


@pytest.mark.scenario(DATABASE)
def test_database_outages_lose_nothing_and_dial_nobody_twice(outcome: BrokerRun) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)


@pytest.mark.scenario(DATABASE)
def test_readiness_reports_the_database_outages(outcome: BrokerRun) -> None:
    for window, statuses in outcome.windows.items():
        assert 503 in statuses, f"/readyz during the database {window}: {sorted(set(statuses))}"
