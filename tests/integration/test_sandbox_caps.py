"""Plan caps over real HTTP: hourly, daily, concurrency (reject or queue)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.sandbox import SandboxFactory, SandboxProcess

pytestmark = pytest.mark.integration

RATE_LIMITED = {"status": "error", "message": "Rate limit exceeded"}
# Calls that stay live for a while: ~60 simulated s at 20x is ~3 s real.
LONG_CALLS = {"clock_speed": 20, "min_talk_s": 60, "max_talk_s": 60, "ring_s": 0, "queue_s": 0}


def number(n: int) -> str:
    return f"+1415777{n:04d}"


def post_calls(sb: SandboxProcess, numbers: range) -> list[httpx.Response]:
    with httpx.Client(base_url=sb.base_url, headers=sb.headers) as client:
        return [
            client.post("/v1/calls", json={"phone_number": number(n), "task": "t"}) for n in numbers
        ]


def only_answered(sb: SandboxProcess) -> None:
    sb.set_outcomes(human=1, voicemail=0, no_answer=0, busy=0, failed=0)


def test_start_plan_rejects_the_101st_call_of_the_hour(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="start", max_talk_s=20)

    responses = post_calls(sb, range(101))

    assert [r.status_code for r in responses[:100]] == [200] * 100
    assert responses[100].status_code == 429
    assert responses[100].json() == RATE_LIMITED
    assert sb.counts()["total"] == 100
    assert sb.counts()["rejected"] == {"rate_cap": 1}


def test_hourly_cap(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="build", max_per_hour=3)

    codes = [r.status_code for r in post_calls(sb, range(5))]

    assert codes == [200, 200, 200, 429, 429]


def test_daily_cap(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="scale", max_per_hour=0, max_per_day=2)

    codes = [r.status_code for r in post_calls(sb, range(4))]

    assert codes == [200, 200, 429, 429]


def test_enterprise_has_no_rate_caps(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="enterprise")

    codes = {r.status_code for r in post_calls(sb, range(120))}

    assert codes == {200}


def test_concurrency_cap_rejects_in_reject_mode(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="start", concurrency_mode="reject", **LONG_CALLS)
    only_answered(sb)

    responses = post_calls(sb, range(11))

    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert responses[10].json() == RATE_LIMITED
    assert sb.counts()["max_active"] == 10


def test_concurrency_cap_queues_by_default(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(
        plan="build", max_concurrent=3, clock_speed=100, min_talk_s=20, max_talk_s=20
    )
    only_answered(sb)

    responses = post_calls(sb, range(7))

    assert {r.status_code for r in responses} == {200}
    sb.wait_until(lambda: all(c["completed"] for c in sb.ground_truth()), timeout_s=15)
    counts = sb.counts()
    assert counts["max_active"] == 3
    assert counts["active"] == 0
    # Live counts every call from its creation to its end, waiting in Bland's queue included.
    assert counts["max_live_calls"] == 7
    assert counts["live_calls"] == 0


def test_waiting_calls_show_queued(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(plan="build", max_concurrent=1, **LONG_CALLS)
    only_answered(sb)

    first, second = post_calls(sb, range(2))
    sb.wait_until(lambda: sb.get_call(first.json()["call_id"])["queue_status"] == "started")

    assert sb.get_call(second.json()["call_id"])["queue_status"] == "queued"
    assert sb.counts()["active"] == 1
