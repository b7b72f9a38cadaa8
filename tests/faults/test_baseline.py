"""No fault at all: the rig itself works, and gives the table a reference row."""

from __future__ import annotations

import pytest

from tests.faults.checks import assert_settled_once
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]


async def _baseline(rig: Rig) -> Tally:
    await rig.boot("sqlite")
    await rig.publish(rig.make_requests(200, id_prefix="base"))
    await rig.settle(timeout_s=60)
    return await rig.tally()


BASELINE = Scenario("baseline (sqlite)", _baseline)


@pytest.mark.scenario(BASELINE)
def test_without_faults_every_request_is_dialed_once_and_settled(outcome: Tally) -> None:
    tally = outcome

    assert_settled_once(tally)
    assert tally.calls == tally.requests == 200
    assert not tally.notes["leaks"]
