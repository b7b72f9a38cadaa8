"""Call lifecycles, listing, stopping and scheduling over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.sandbox import SandboxFactory, SandboxProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


LONG_CALLS = {"clock_speed": 20, "min_talk_s": 100, "max_talk_s": 100, "ring_s": 0, "queue_s": 0}
ONLY = {"human": 0, "voicemail": 0, "no_answer": 0, "busy": 0, "failed": 0}


def number(n: int) -> str:
    return f"+1415888{n:04d}"


def create(sb: SandboxProcess, n: int, **extra: Any) -> str:
    body = {"phone_number": number(n), "task": "t", **extra}
    response = httpx.post(f"{sb.base_url}/v1/calls", json=body, headers=sb.headers)
    assert response.status_code == 200, response.text
    call_id: str = response.json()["call_id"]
    return call_id


def finished(sb: SandboxProcess, call_id: str) -> dict[str, Any]:
    sb.wait_until(lambda: sb.get_call(call_id)["completed"], timeout_s=15)
    return sb.get_call(call_id)


def list_calls(sb: SandboxProcess, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{sb.base_url}/v1/calls", params=params, headers=sb.headers)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("human", ("completed", "human", None, "COMPLETED_ACTION")),
        ("voicemail", ("completed", "voicemail", None, "NO_CONTACT_MADE")),
        ("no_answer", ("no-answer", "no-answer", None, "NO_ANSWER")),
        ("busy", ("busy", None, "Call failed. The number you dialed is busy", "BUSY")),
        ("failed", ("failed", None, "Call failed.", "FAILED")),
    ],
)
def test_each_outcome_ends_like_bland_reports_it(
    sandbox: SandboxProcess, kind: str, expected: tuple[str, str | None, str | None, str]
) -> None:
    status, answered_by, error_prefix, tag = expected
    sandbox.set_outcomes(**{**ONLY, kind: 1})

    call = finished(sandbox, create(sandbox, 1, metadata={"kind": kind}))

    assert call["status"] == status
    assert call["answered_by"] == answered_by
    assert call["queue_status"] == "complete"
    assert call["metadata"] == {"kind": kind}
    assert call["disposition_tag"] == tag
    assert call["summary"]
    assert call["price"] >= 0.015
    if error_prefix is None:
        assert call["error_message"] is None
    else:
        assert call["error_message"].startswith(error_prefix)
    if kind in {"no_answer", "busy", "failed"}:
        assert call["corrected_duration"] == "0"
        assert call["call_length"] == 0


def test_queue_status_moves_forward(sandbox_factory: SandboxFactory) -> None:
    # Each phase lasts a real second: a poll every 10 ms sees it even on a busy machine.
    sb = sandbox_factory(clock_speed=4, queue_s=4, ring_s=4, min_talk_s=4, max_talk_s=4)
    sb.set_outcomes(**{**ONLY, "human": 1})
    call_id = create(sb, 2)
    order = ["new", "queued", "allocated", "started", "complete"]
    seen: list[str] = []

    def progressed() -> bool:
        status = str(sb.get_call(call_id)["queue_status"])
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "complete"

    sb.wait_until(progressed, timeout_s=30, interval_s=0.01)

    assert seen == sorted(seen, key=order.index)
    assert {"queued", "started", "complete"} <= set(seen)


def test_max_duration_caps_the_call(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(min_talk_s=300, max_talk_s=300)
    sb.set_outcomes(**{**ONLY, "human": 1})

    call = finished(sb, create(sb, 3, max_duration=1))

    assert call["corrected_duration"] == "60"
    assert call["call_length"] == 1.0


def test_stop_ends_a_live_call(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(**LONG_CALLS)
    sb.set_outcomes(**{**ONLY, "human": 1})
    call_id = create(sb, 4)
    sb.wait_until(lambda: sb.get_call(call_id)["queue_status"] == "started")

    response = httpx.post(f"{sb.base_url}/v1/calls/{call_id}/stop", headers=sb.headers)

    assert response.json() == {"status": "success", "message": "Call ended successfully."}
    call = finished(sb, call_id)
    assert call["status"] == "completed"
    assert int(call["corrected_duration"]) < 100
    assert sb.counts()["active"] == 0


def test_stop_cancels_a_scheduled_call(sandbox: SandboxProcess) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S +00:00")
    call_id = create(sandbox, 5, start_time=later)

    assert sandbox.get_call(call_id)["queue_status"] == "new"
    response = httpx.post(f"{sandbox.base_url}/v1/calls/{call_id}/stop", headers=sandbox.headers)

    assert response.status_code == 200
    call = finished(sandbox, call_id)
    assert call["status"] == "canceled"
    assert call["started_at"] is None


def test_stop_of_unknown_or_finished_call(sandbox: SandboxProcess) -> None:
    sandbox.set_outcomes(**{**ONLY, "busy": 1})
    call_id = create(sandbox, 6)
    finished(sandbox, call_id)

    again = httpx.post(f"{sandbox.base_url}/v1/calls/{call_id}/stop", headers=sandbox.headers)
    unknown = httpx.post(f"{sandbox.base_url}/v1/calls/nope/stop", headers=sandbox.headers)

    assert again.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json() == {"status": "error", "message": "SID not found for the given c_id."}


def test_scheduled_call_waits_for_its_start_time(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(clock_speed=60, min_talk_s=5, max_talk_s=5)
    sb.set_outcomes(**{**ONLY, "human": 1})
    # 60 seconds ahead on the sandbox clock: about one real second at 60x.
    start = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
    call_id = create(sb, 7, start_time=start.strftime("%Y-%m-%d %H:%M:%S"))

    assert sb.get_call(call_id)["queue_status"] == "new"
    call = finished(sb, call_id)
    assert call["status"] == "completed"
    waited_s = datetime.fromisoformat(call["started_at"]) - datetime.fromisoformat(
        call["created_at"]
    )
    assert waited_s >= timedelta(seconds=0.9)  # the rest of the minute, at 60x


def test_list_filters_and_paging(sandbox: SandboxProcess) -> None:
    sandbox.set_outcomes(**{**ONLY, "human": 1})
    ids = [create(sandbox, n) for n in (10, 11, 12)]
    finished(sandbox, ids[0])

    everything = list_calls(sandbox)
    by_number = list_calls(sandbox, to_number=number(11))
    ascending = list_calls(sandbox, ascending="true")
    page = list_calls(sandbox, ascending="true", **{"from": 1, "to": 3})
    limited = list_calls(sandbox, limit=1)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    dated = list_calls(sandbox, start_date=today, end_date=today)
    future = list_calls(sandbox, start_date="2999-01-01")

    assert (everything["total_count"], everything["count"]) == (3, 3)
    assert [c["call_id"] for c in everything["calls"]] == ids[::-1]
    assert all("transcripts" not in c for c in everything["calls"])
    assert [c["call_id"] for c in by_number["calls"]] == [ids[1]]
    assert [c["call_id"] for c in ascending["calls"]] == ids
    assert [c["call_id"] for c in page["calls"]] == ids[1:3]
    assert (limited["total_count"], limited["count"]) == (3, 1)
    assert dated["total_count"] == 3
    assert future["total_count"] == 0


def test_list_by_completion_and_answered_by(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(**LONG_CALLS)
    sb.set_outcomes(**{**ONLY, "busy": 1})
    busy = create(sb, 20)
    finished(sb, busy)
    sb.set_outcomes(**{**ONLY, "human": 1})
    live = create(sb, 21)
    sb.wait_until(lambda: sb.get_call(live)["queue_status"] == "started")

    done = list_calls(sb, completed="true")
    open_calls = list_calls(sb, completed="false")
    humans = list_calls(sb, answered_by="human")

    assert [c["call_id"] for c in done["calls"]] == [busy]
    assert [c["call_id"] for c in open_calls["calls"]] == [live]
    assert [c["call_id"] for c in humans["calls"]] == [live]
