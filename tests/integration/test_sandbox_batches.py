"""v2 and legacy batches over real HTTP, with status webhooks."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.support.sandbox import SandboxFactory, SandboxProcess, WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


ONLY_HUMAN = {"human": 1, "voicemail": 0, "no_answer": 0, "busy": 0, "failed": 0}
LONG_CALLS = {"clock_speed": 20, "min_talk_s": 100, "max_talk_s": 100, "ring_s": 0, "queue_s": 0}


def number(n: int) -> str:
    return f"+1415999{n:04d}"


def create_v2(sb: SandboxProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{sb.base_url}/v2/batches/create", json=body, headers=sb.headers)


def get(sb: SandboxProcess, path: str, **params: Any) -> httpx.Response:
    return httpx.get(sb.base_url + path, params=params, headers=sb.headers)


def statuses(receiver: WebhookReceiver, path: str) -> list[str]:
    return [json.loads(b)["status"] for b in receiver.bodies(path)]


def test_v2_batch_runs_every_call_and_reports_its_phases(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.set_outcomes(**ONLY_HUMAN)
    body = {
        "global": {
            "task": "Hello",
            "metadata": {"campaign": "c1"},
            "webhook": webhook_receiver.url + "/call",
        },
        "call_objects": [
            {"phone_number": number(1)},
            {"phone_number": number(2), "metadata": {"row": 2}},
        ],
        "description": "two calls",
        "status_webhook": webhook_receiver.url + "/status",
    }

    response = create_v2(sandbox, body)

    assert response.status_code == 200
    batch_id = response.json()["data"]["batch_id"]
    assert response.json() == {"data": {"batch_id": batch_id}, "errors": None}
    assert str(uuid.UUID(batch_id)) == batch_id
    sandbox.wait_until(lambda: "completed" in statuses(webhook_receiver, "/status"), timeout_s=15)
    assert statuses(webhook_receiver, "/status") == [
        "validating",
        "dispatching",
        "in_progress",
        "completed",
    ]
    final = json.loads(webhook_receiver.bodies("/status")[-1])
    assert (final["calls_total"], final["calls_successful"], final["calls_failed"]) == (2, 2, 0)
    assert final["batch_id"] == batch_id
    # The batch's `completed` may overtake the last call's own webhook: wait for both.
    sandbox.wait_until(lambda: len(webhook_receiver.bodies("/call")) >= 2, timeout_s=15)
    assert all(r.signature_valid(sandbox.webhook_secret) for r in webhook_receiver.received)
    calls = [json.loads(b) for b in webhook_receiver.bodies("/call")]
    assert sorted(c["to"] for c in calls) == [number(1), number(2)]
    assert {c["batch_id"] for c in calls} == {batch_id}
    assert sorted(json.dumps(c["metadata"]) for c in calls) == [
        json.dumps({"campaign": "c1"}),
        json.dumps({"row": 2}),
    ]
    listed = get(sandbox, "/v1/calls", batch_id=batch_id).json()
    assert listed["total_count"] == 2


def test_v2_batch_get_and_logs(sandbox: SandboxProcess) -> None:
    body = {"global": {"task": "Hi", "record": True}, "call_objects": [{"phone_number": number(3)}]}
    batch_id = create_v2(sandbox, body).json()["data"]["batch_id"]

    def complete() -> bool:
        logs = get(sandbox, f"/v2/batches/{batch_id}/logs").json()["data"]
        return bool(logs) and logs[0]["event_type"] == "complete"

    sandbox.wait_until(complete, timeout_s=15)
    batch = get(sandbox, f"/v2/batches/{batch_id}").json()
    logs = get(sandbox, f"/v2/batches/{batch_id}/logs", direction="asc").json()["data"]
    first_two = get(sandbox, f"/v2/batches/{batch_id}/logs", direction="asc", take=2, skip=1).json()

    assert batch["errors"] is None
    assert batch["data"]["id"] == batch_id
    assert json.loads(batch["data"]["base_prompt"]) == {"task": "Hi", "record": True}
    assert batch["data"]["description"] == "Untitled Batch"
    assert "status" not in batch["data"]
    assert [entry["payload"].get("state_change") for entry in logs[:-1]] == [
        "validating",
        "dispatching",
        "in_progress",
    ]
    assert logs[2]["payload"]["message"].startswith("Requested: 1. Validated: 1. Dispatched: 1.")
    assert logs[-1]["payload"]["calls_total"] == 1
    assert first_two["data"] == logs[1:3]


def test_v2_batch_without_a_phone_number_fails(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    body = {
        "global": {"task": "Hi"},
        "call_objects": [{"phone_number": number(4)}, {"metadata": {"x": 1}}],
        "status_webhook": webhook_receiver.url,
    }

    assert create_v2(sandbox, body).status_code == 200

    sandbox.wait_until(lambda: "failed" in statuses(webhook_receiver, "/"))
    final = json.loads(webhook_receiver.bodies()[-1])
    assert final["code"] == "source_invalid"
    assert final["reason"] == "Entry #2 did not have a phone number."
    assert sandbox.counts()["total"] == 0


def test_v2_batch_requires_global(sandbox: SandboxProcess) -> None:
    response = create_v2(sandbox, {"call_objects": [{"phone_number": number(5)}]})

    assert response.status_code == 400
    assert response.json()["data"] is None
    assert response.json()["errors"]


def test_v2_stop_cancels_calls_not_yet_connected(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(max_concurrent=1, **LONG_CALLS)
    sb.set_outcomes(**ONLY_HUMAN)
    body = {
        "global": {"task": "Hi"},
        "call_objects": [{"phone_number": number(n)} for n in range(6, 9)],
    }
    batch_id = create_v2(sb, body).json()["data"]["batch_id"]
    sb.wait_until(lambda: any(c["queue_status"] == "started" for c in sb.ground_truth()))

    response = httpx.post(f"{sb.base_url}/v2/batches/{batch_id}/stop", headers=sb.headers)

    assert response.json() == {"data": None, "errors": None}
    sb.wait_until(lambda: sum(c["status"] == "canceled" for c in sb.ground_truth()) == 2)


def test_unknown_v2_batch_is_404(sandbox: SandboxProcess) -> None:
    response = get(sandbox, f"/v2/batches/{uuid.uuid4()}")

    assert response.status_code == 404


def test_legacy_batch_fills_the_prompt_per_row(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    body = {
        "base_prompt": "Hello {{name}}",
        "call_data": [
            {"phone_number": number(10), "name": "Ann"},
            {"phone_number": number(11), "name": "Bo"},
        ],
        "label": "L",
        "campaign_id": "camp",
        "batch_webhook": webhook_receiver.url + "/batch",
        "max_duration": 2,
    }

    response = httpx.post(f"{sandbox.base_url}/v1/batches", json=body, headers=sandbox.headers)

    assert response.status_code == 200
    batch_id = response.json()["batch_id"]
    assert response.json() == {"message": "success", "batch_id": batch_id}
    assert batch_id.endswith("-gen-batch")
    tasks = sorted(c["body"]["task"] for c in sandbox.ground_truth())
    assert tasks == ["Hello Ann", "Hello Bo"]
    assert {c["batch_id"] for c in sandbox.ground_truth()} == {batch_id}
    sandbox.wait_until(lambda: bool(webhook_receiver.bodies("/batch")), timeout_s=15)
    assert json.loads(webhook_receiver.bodies("/batch")[0]) == {
        "batch_id": batch_id,
        "status": "completed",
    }
    batch = get(sandbox, f"/v1/batches/{batch_id}").json()
    assert batch["status"] == "completed"
    assert batch["batch_params"]["label"] == "L"
    assert batch["batch_params"]["call_params"] == {"max_duration": 2}
    assert len(batch["call_data"]) == 2
    assert batch["analysis"]["total_calls"] == 2
    assert batch["analysis"]["completed_calls"] == 2
    lean = get(sandbox, f"/v1/batches/{batch_id}", include_calls="false").json()
    assert "call_data" not in lean


def test_legacy_test_mode_dispatches_only_the_first_row(sandbox: SandboxProcess) -> None:
    body = {
        "base_prompt": "Hi",
        "call_data": [{"phone_number": number(n)} for n in range(12, 15)],
        "test_mode": True,
    }

    response = httpx.post(f"{sandbox.base_url}/v1/batches", json=body, headers=sandbox.headers)

    assert response.status_code == 200
    assert [c["phone_number"] for c in sandbox.ground_truth()] == [number(12)]


def test_legacy_stop(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(max_concurrent=1, **LONG_CALLS)
    sb.set_outcomes(**ONLY_HUMAN)
    body = {"base_prompt": "Hi", "call_data": [{"phone_number": number(n)} for n in range(15, 18)]}
    batch_id = httpx.post(f"{sb.base_url}/v1/batches", json=body, headers=sb.headers).json()[
        "batch_id"
    ]
    sb.wait_until(lambda: any(c["queue_status"] == "started" for c in sb.ground_truth()))

    response = httpx.post(f"{sb.base_url}/v1/batches/{batch_id}/stop", headers=sb.headers)

    assert response.json() == {
        "status": "success",
        "message": "Successfully stopped batch",
        "num_calls": 2,
        "batch_id": batch_id,
    }


def test_v2_b_cid_becomes_the_call_id(sandbox: SandboxProcess) -> None:
    b_cid = str(uuid.UUID(int=(uuid.uuid4().int & ~(0xF << 76)) | (7 << 76)))
    body = {
        "global": {"task": "Hi"},
        "call_objects": [{"phone_number": number(20), "b_cid": b_cid}],
    }

    assert create_v2(sandbox, body).status_code == 200

    sandbox.wait_until(lambda: bool(sandbox.ground_truth()))
    assert [c["call_id"] for c in sandbox.ground_truth()] == [b_cid]
    assert sandbox.get_call(b_cid)["call_id"] == b_cid
