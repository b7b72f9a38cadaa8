"""The broker goes away: restarted twice (stop_app/start_app on the private node), partitioned
(the service's link held for 15 s, then healed) and reset (every link cut, reconnections
refused for a while).

Requests are published at a steady pace by a publisher connected straight to the node (it
rides out the restarts and re-publishes what was not confirmed, with the same message_id); the
recorder's durable queue keeps every event while it is disconnected.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call
from tests.faults.launcher import Service, poll
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

REQUESTS = 400
PUBLISH_PER_S = 50.0
PARTITION_S = 15.0
RESET_S = 4.0


@dataclass
class ReadyzProbe:
    """GET /readyz of one replica, sampled in the background: (time.monotonic(), status)."""

    service: Service
    samples: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> ReadyzProbe:
        async def run() -> None:
            while True:
                status, _ = await self.service.readyz()
                self.samples.append((time.monotonic(), status))
                await asyncio.sleep(0.25)  # sampling period of the probe

        self._task = asyncio.create_task(run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[int]:
        """Statuses sampled between two time.monotonic() instants."""
        return [status for at, status in self.samples if start <= at <= end]


@dataclass
class BrokerRun:
    """The tally and what readiness said during each fault."""

    tally: Tally
    windows: dict[str, list[int]] = field(default_factory=dict)


async def _until_share(rig: Rig, share: float, total: int) -> None:
    await rig.wait_calls(int(share * total), timeout_s=120)


async def _restart_twice(rig: Rig) -> BrokerRun:
    (service,) = await rig.boot("sqlite")
    probe = ReadyzProbe(service).start()
    publishing = asyncio.create_task(
        rig.publish(rig.make_requests(REQUESTS, id_prefix="rs"), per_second=PUBLISH_PER_S)
    )
    windows: dict[str, list[int]] = {}
    downtimes = []
    for number, share in ((1, 0.25), (2, 0.6)):
        await _until_share(rig, share, REQUESTS)
        t0 = time.monotonic()
        stopped = await asyncio.to_thread(rig.node.stop_app)

        async def noticed() -> bool:
            return (await service.readyz())[0] == 503

        # Down until the service has noticed (a poll with a deadline), plus the time it takes.
        await poll(noticed, timeout_s=30, what="readiness to report the broker restart")
        started = await asyncio.to_thread(rig.node.start_app)
        downtimes.append(round(started - stopped, 1))
        await service.wait_ready(timeout_s=60)
        windows[f"restart {number}"] = probe.between(t0, time.monotonic())
    await publishing
    settled = await rig.settle(timeout_s=120)
    await probe.stop()
    tally = await rig.tally(
        settled=settled, broker_down_s=downtimes, publisher_retries=rig.publisher.retries
    )
    return BrokerRun(tally, windows)


async def _partition_and_reset(rig: Rig) -> BrokerRun:
    (service,) = await rig.boot("sqlite")
    probe = ReadyzProbe(service).start()
    publishing = asyncio.create_task(
        rig.publish(rig.make_requests(REQUESTS, id_prefix="pt"), per_second=PUBLISH_PER_S)
    )
    windows: dict[str, list[int]] = {}

    await _until_share(rig, 0.2, REQUESTS)
    start = time.monotonic()
    rig.broker_link.hold()
    await asyncio.sleep(PARTITION_S)  # the fault's length, not a wait for a condition
    rig.broker_link.restore()
    windows["partition"] = probe.between(start, time.monotonic())
    await service.wait_ready(timeout_s=60)

    await _until_share(rig, 0.6, REQUESTS)
    start = time.monotonic()
    rig.broker_link.cut()
    await asyncio.sleep(RESET_S)  # reconnections are refused this long
    rig.broker_link.restore()
    await service.wait_ready(timeout_s=60)
    windows["reset"] = probe.between(start, time.monotonic())

    await publishing
    settled = await rig.settle(timeout_s=120)
    await probe.stop()
    tally = await rig.tally(
        settled=settled,
        readyz_during_partition=sorted(set(windows["partition"])),
        readyz_during_reset=sorted(set(windows["reset"])),
        broker_links_accepted=rig.broker_link.accepted,
    )
    return BrokerRun(tally, windows)


RESTARTS = Scenario("broker restart x2", _restart_twice, exclusive=True)
PARTITION = Scenario("broker partition 15 s + link reset", _partition_and_reset, weight_s=45)


@pytest.mark.scenario(RESTARTS)
def test_two_broker_restarts_lose_nothing_and_dial_nobody_twice(outcome: BrokerRun) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
    for window, statuses in outcome.windows.items():
        assert 503 in statuses, f"readiness never reported the {window}: {statuses}"


@pytest.mark.scenario(PARTITION)
def test_a_partition_and_a_link_reset_lose_nothing_and_dial_nobody_twice(
    outcome: BrokerRun,
) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)


@pytest.mark.scenario(PARTITION)
def test_readiness_reports_a_link_reset(outcome: BrokerRun) -> None:
    assert 503 in outcome.windows["reset"], outcome.windows["reset"]


@pytest.mark.scenario(PARTITION)
def test_readiness_reports_a_broker_partition(outcome: BrokerRun) -> None:
    statuses = outcome.windows["partition"]
    assert statuses, "no readiness sample during the partition"
    assert 503 in statuses, (
        f"/readyz during the {PARTITION_S:.0f} s partition: {sorted(set(statuses))}"
    )
