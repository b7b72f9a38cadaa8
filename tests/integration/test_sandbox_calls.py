"""POST /v1/calls, call details, webhooks: the sandbox over real HTTP."""

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


QUEUED = "Call successfully queued."
AUTH_FAILURE = {"data": None, "errors": [{"error": "AUTH_FAILURE", "message": "Unauthorized"}]}


def number(n: int) -> str:
    """A valid US number, distinct per n."""
    return f"+1415555{n:04d}"


def post_call(sb: SandboxProcess, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{sb.base_url}/v1/calls", json=body, headers=headers or sb.headers)


def test_create_call_answers_exactly_like_bland(sandbox: SandboxProcess) -> None:
    response = post_call(sandbox, {"phone_number": number(1), "task": "Say hi"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message", "call_id", "batch_id"}
    assert body["status"] == "success"
    assert body["message"] == QUEUED
    assert body["batch_id"] is None
    assert str(uuid.UUID(body["call_id"])) == body["call_id"]
    assert [c["call_id"] for c in sandbox.ground_truth()] == [body["call_id"]]


def test_signed_webhook_carries_the_full_call_object(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    metadata = {"request_id": "r-1", "nested": {"x": [1, 2]}}
    response = post_call(
        sandbox,
        {
            "phone_number": number(2),
            "task": "Say hi",
            "metadata": metadata,
            "record": True,
            "webhook": webhook_receiver.url + "/hook",
        },
    )
    call_id = response.json()["call_id"]

    sandbox.wait_until(lambda: len(webhook_receiver.received) == 1)
    received = webhook_receiver.received[0]
    assert received.path == "/hook"
    assert received.signature_valid(sandbox.webhook_secret)
    assert not received.signature_valid("another-secret")
    payload = json.loads(received.body)
    assert payload["call_id"] == call_id
    assert payload["metadata"] == metadata
    assert payload["completed"] is True
    assert payload["queue_status"] == "complete"
    assert payload == sandbox.get_call(call_id)


def test_call_details_after_completion(sandbox: SandboxProcess) -> None:
    sandbox.set_outcomes(human=1, voicemail=0, no_answer=0, busy=0, failed=0)
    call_id = post_call(
        sandbox,
        {"phone_number": number(3), "task": "t", "record": True, "metadata": {"k": "v"}},
    ).json()["call_id"]

    sandbox.wait_until(lambda: sandbox.get_call(call_id)["completed"])
    call = sandbox.get_call(call_id)
    assert call["status"] == "completed"
    assert call["answered_by"] == "human"
    assert call["to"] == number(3)
    assert call["metadata"] == {"k": "v"}
    assert isinstance(call["corrected_duration"], str)
    seconds = int(call["corrected_duration"])
    assert seconds > 0
    assert call["call_length"] == pytest.approx(seconds / 60, abs=0.001)
    assert call["recording_url"]
    assert call["summary"]
    assert call["disposition_tag"] == "COMPLETED_ACTION"
    assert call["price"] >= 0.015
    assert call["error_message"] is None
    assert call["created_at"] < call["started_at"] < call["end_at"]
    assert call["transcripts"]


def test_unknown_call_is_404(sandbox: SandboxProcess) -> None:
    response = httpx.get(f"{sandbox.base_url}/v1/calls/{uuid.uuid4()}", headers=sandbox.headers)

    assert response.status_code == 404
    assert response.json() == {"status": "error", "message": "Call not found"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "test-api-key"},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "x-api-key", "wrong", "empty"],
)
def test_auth_failures_use_blands_envelope(
    sandbox: SandboxProcess, headers: dict[str, str]
) -> None:
    response = httpx.post(
        f"{sandbox.base_url}/v1/calls",
        json={"phone_number": number(4), "task": "t"},
        headers=headers,
    )

    assert response.status_code == 401
    assert response.json() == AUTH_FAILURE
    assert sandbox.counts()["total"] == 0


def test_bearer_and_bare_keys_both_authenticate(sandbox: SandboxProcess) -> None:
    bare = post_call(
        sandbox, {"phone_number": number(5), "task": "t"}, Authorization="test-api-key"
    )
    bearer = post_call(
        sandbox, {"phone_number": number(6), "task": "t"}, Authorization="Bearer test-api-key"
    )

    assert (bare.status_code, bearer.status_code) == (200, 200)


def test_any_key_accepted_without_configured_keys(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(api_key=None)

    ok = post_call(sb, {"phone_number": number(7), "task": "t"}, Authorization="whatever")
    missing = httpx.post(f"{sb.base_url}/v1/calls", json={"phone_number": number(8), "task": "t"})

    assert ok.status_code == 200
    assert missing.status_code == 401


def test_validation_errors_use_blands_envelope(sandbox: SandboxProcess) -> None:
    response = post_call(sandbox, {"task": "t"})

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error"
    assert body["message"] == "Invalid parameters"
    assert "Missing required parameter: phone_number." in body["errors"]
    assert sandbox.counts()["total"] == 0


def test_same_number_within_ten_seconds_is_429(sandbox: SandboxProcess) -> None:
    first = post_call(sandbox, {"phone_number": number(9), "task": "t"})
    second = post_call(sandbox, {"phone_number": number(9), "task": "t"})
    other = post_call(sandbox, {"phone_number": number(10), "task": "t"})

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json() == {
        "status": "error",
        "message": "Calls can only be sent every 10 seconds to the same number. "
        "Please try again in a few seconds.",
    }
    assert other.status_code == 200
    assert sandbox.counts()["by_number"] == {number(9): 1, number(10): 1}


def test_same_number_window_is_configurable(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(same_number_window_s=0)

    codes = [post_call(sb, {"phone_number": number(11), "task": "t"}).status_code for _ in range(3)]

    assert codes == [200, 200, 200]


def test_http_webhooks_are_refused_by_default(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(allow_http_webhooks=False)

    remote = post_call(
        sb, {"phone_number": number(12), "task": "t", "webhook": "http://example.com/h"}
    )
    loopback = post_call(
        sb, {"phone_number": number(13), "task": "t", "webhook": "http://127.0.0.1:9/h"}
    )
    https = post_call(
        sb, {"phone_number": number(14), "task": "t", "webhook": "https://example.com/h"}
    )

    assert remote.status_code == 400
    assert remote.json()["errors"] == ["webhook must be a string that starts with https://."]
    assert loopback.status_code == 200
    assert https.status_code == 200


def test_strict_https_refuses_loopback_http(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(allow_http_webhooks=False, strict_https_webhooks=True)

    response = post_call(
        sb, {"phone_number": number(15), "task": "t", "webhook": "http://127.0.0.1:9/h"}
    )

    assert response.status_code == 400


def test_every_attempt_is_noted_in_arrival_order(sandbox: SandboxProcess) -> None:
    ok = post_call(sandbox, {"phone_number": number(16), "task": "t"}).json()["call_id"]
    post_call(sandbox, {"phone_number": number(16), "task": "t"})
    post_call(sandbox, {"task": "t"})
    httpx.post(f"{sandbox.base_url}/v1/calls", json={"phone_number": number(17), "task": "t"})

    noted = [(a["outcome"], a["status_code"], a["phone_number"]) for a in sandbox.requests()]

    assert noted == [
        ("queued", 200, number(16)),
        ("same_number", 429, number(16)),
        ("invalid", 400, None),
        ("auth", 401, None),
    ]
    assert sandbox.requests()[0]["call_id"] == ok
    assert sandbox.counts()["rejected"] == {"same_number": 1, "invalid": 1, "auth": 1}
