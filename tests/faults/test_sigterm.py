"""SIGTERM under load: the service drains and exits 0 within its grace period
(DIALER_SHUTDOWN_GRACE_S), then a restarted service finishes the rest: nothing lost, nobody
dialed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.faults.checks import assert_dialed_once_or_settled_without_a_call
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.service import FAST_ENV
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]

REQUESTS = 500
GRACE_S = float(FAST_ENV["DIALER_SHUTDOWN_GRACE_S"])


@dataclass
class SigtermRun:
    """The tally, the exit code and how long the drain took."""

    tally: Tally
    exit_code: int | None
    drain_s: float
    calls_at_signal: int


async def _sigterm(rig: Rig) -> SigtermRun:
    (service,) = await rig.boot("sqlite", sandbox={"latency_ms": 50})
    await rig.publish(rig.make_requests(REQUESTS, id_prefix="st"))
    await rig.wait_calls(int(0.3 * REQUESTS), timeout_s=120)
    calls_at_signal = await rig.calls()
    code, drain_s = await service.terminate(timeout_s=GRACE_S + 20)
    stopped_cleanly = "service_stopped" in service.log()
    await service.start()  # same port, same ledger
    settled = await rig.settle(timeout_s=120)
    tally = await rig.tally(
        settled=settled,
        exit_code=code,
        drain_s=round(drain_s, 2),
        grace_s=GRACE_S,
        calls_at_signal=calls_at_signal,
        logged_service_stopped=stopped_cleanly,
    )
    return SigtermRun(tally, code, drain_s, calls_at_signal)


SIGTERM = Scenario("SIGTERM under load, restart", _sigterm)


@pytest.mark.scenario(SIGTERM)
def test_sigterm_under_load_exits_zero_within_the_grace_period(outcome: SigtermRun) -> None:
    assert outcome.calls_at_signal < REQUESTS, "signalled too late to prove anything"
    assert outcome.exit_code == 0
    assert outcome.drain_s <= GRACE_S, f"drained in {outcome.drain_s:.1f} s, grace {GRACE_S} s"


@pytest.mark.scenario(SIGTERM)
def test_a_restarted_service_finishes_the_rest(outcome: SigtermRun) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.tally)
