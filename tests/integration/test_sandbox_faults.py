"""Fault injection knobs, at start-up and at run time, over real HTTP."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import httpx
import pytest

from sandbox.faults import SERVER_ERROR_MESSAGE
from tests.support.sandbox import SandboxFactory, SandboxProcess, WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


def number(n: int) -> str:
    return f"+1415666{n:04d}"


def post_call(sb: SandboxProcess, n: int, **extra: object) -> httpx.Response:
    body = {"phone_number": number(n), "task": "t", **extra}
    return httpx.post(f"{sb.base_url}/v1/calls", json=body, headers=sb.headers, timeout=10)


def test_knobs_set_at_start_up(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(latency_ms=300, rate_limit_429_share=1.0, webhook_retries=5)

    started = time.monotonic()
    response = post_call(sb, 1)
    elapsed_s = time.monotonic() - started

    assert elapsed_s >= 0.3
    assert response.status_code == 429
    assert response.json() == {"status": "error", "message": "Rate limit exceeded"}
    assert sb.counts()["total"] == 0
    knobs = httpx.get(f"{sb.base_url}/_sandbox/faults").json()
    assert (knobs["latency_ms"], knobs["webhook_retries"]) == (300, 5)


def test_latency_set_at_run_time(sandbox: SandboxProcess) -> None:
    assert sandbox.set_faults(latency_ms=250)["latency_ms"] == 250

    started = time.monotonic()
    httpx.get(f"{sandbox.base_url}/v1/calls", headers=sandbox.headers)

    assert time.monotonic() - started >= 0.25


def test_5xx_share_answers_500_and_records_nothing(sandbox: SandboxProcess) -> None:
    sandbox.set_faults(error_5xx_share=1.0)

    response = post_call(sandbox, 2)

    assert response.status_code == 500
    assert response.json() == {"status": "error", "message": SERVER_ERROR_MESSAGE}
    assert sandbox.counts()["total"] == 0


def test_429_share_answers_rate_limit_and_records_nothing(sandbox: SandboxProcess) -> None:
    sandbox.set_faults(rate_limit_429_share=1.0)

    response = post_call(sandbox, 3)

    assert response.status_code == 429
    assert response.json() == {"status": "error", "message": "Rate limit exceeded"}
    assert sandbox.counts()["total"] == 0


def test_dropped_connection_still_places_the_call(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.set_faults(drop_share=1.0)

    with pytest.raises(httpx.RemoteProtocolError):
        post_call(sandbox, 4, metadata={"request_id": "r-drop"}, webhook=webhook_receiver.url)

    truth = sandbox.ground_truth()
    assert len(truth) == 1
    assert truth[0]["metadata"] == {"request_id": "r-drop"}
    assert truth[0]["response_dropped"] is True
    assert [a["outcome"] for a in sandbox.requests()] == ["dropped"]
    sandbox.wait_until(lambda: len(webhook_receiver.received) == 1)
    assert json.loads(webhook_receiver.received[0].body)["call_id"] == truth[0]["call_id"]


def test_drop_on_a_kept_alive_connection_is_not_retried_by_the_client(
    sandbox: SandboxProcess,
) -> None:
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.headers) as client:
        first = client.post("/v1/calls", json={"phone_number": number(14), "task": "t"})
        sandbox.set_faults(drop_share=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/calls", json={"phone_number": number(15), "task": "t"})

    assert first.status_code == 200
    assert sandbox.counts()["by_number"] == {number(14): 1, number(15): 1}


def test_dropped_call_is_found_by_listing(sandbox: SandboxProcess) -> None:
    sandbox.set_faults(drop_share=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        post_call(sandbox, 5, metadata={"request_id": "r-5"})
    sandbox.set_faults(drop_share=0.0)

    listed = httpx.get(
        f"{sandbox.base_url}/v1/calls", params={"to_number": number(5)}, headers=sandbox.headers
    ).json()

    assert [c["metadata"] for c in listed["calls"]] == [{"request_id": "r-5"}]


def test_lost_webhooks_are_never_sent(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    sb = sandbox
    sb.set_faults(webhook_loss_share=1.0)

    call_id = post_call(sb, 6, webhook=webhook_receiver.url).json()["call_id"]
    sb.wait_until(lambda: bool(sb.webhooks()))

    assert sb.webhooks()[0]["lost"] is True
    assert sb.webhooks()[0]["call_id"] == call_id
    sb.wait_until(sb.quiet)  # the call and its webhook work are over: nothing more will come
    assert webhook_receiver.received == []


def test_failed_webhooks_are_retried_until_2xx(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.status_codes = [500, 429]

    post_call(sandbox, 7, webhook=webhook_receiver.url)
    sandbox.wait_until(lambda: len(webhook_receiver.received) == 3)

    bodies = {r.body for r in webhook_receiver.received}
    assert len(bodies) == 1
    assert all(r.signature_valid(sandbox.webhook_secret) for r in webhook_receiver.received)
    attempts = [(d["attempt"], d["status_code"], d["delivered"]) for d in sandbox.webhooks()]
    assert attempts == [(1, 500, False), (2, 429, False), (3, 200, True)]


def test_webhook_retry_count_is_a_knob(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.set_faults(webhook_retries=1)
    webhook_receiver.status_codes = [503, 503, 503, 503]

    post_call(sandbox, 8, webhook=webhook_receiver.url)
    sandbox.wait_until(lambda: len(sandbox.webhooks()) == 2)
    sandbox.wait_until(sandbox.quiet)  # the delivery has given up: no third attempt can come

    assert len(webhook_receiver.received) == 2
    assert [d["delivered"] for d in sandbox.webhooks()] == [False, False]


def test_webhook_timeouts_are_retried(
    sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = sandbox_factory(webhook_timeout_s=0.2, webhook_retries=1)
    webhook_receiver.delay_s = 0.5

    post_call(sb, 9, webhook=webhook_receiver.url)
    sb.wait_until(lambda: len(sb.webhooks()) == 2)

    assert [d.get("error") for d in sb.webhooks()] == ["ReadTimeout", "ReadTimeout"]


def test_same_seed_gives_the_same_faults(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(seed=42, error_5xx_share=0.3, rate_limit_429_share=0.3)

    def codes() -> list[int]:
        with httpx.Client(base_url=sb.base_url, headers=sb.headers) as client:
            return [
                client.post("/v1/calls", json={"phone_number": number(n), "task": "t"}).status_code
                for n in range(20, 40)
            ]

    first = codes()
    sb.reset()  # reseeds, as a fresh process with the same --seed would start
    second = codes()

    assert first == second
    assert {200, 429, 500} <= set(first)


def test_bad_fault_knob_is_refused(sandbox: SandboxProcess) -> None:
    response = httpx.put(f"{sandbox.base_url}/_sandbox/faults", json={"drop_share": 2})

    assert response.status_code == 400
    assert "drop_share" in response.json()["error"]


def test_reset_restores_start_up_faults_and_forgets_calls(sandbox: SandboxProcess) -> None:
    post_call(sandbox, 10)
    sandbox.set_faults(error_5xx_share=1.0)

    sandbox.reset()

    assert sandbox.counts()["total"] == 0
    assert post_call(sandbox, 10).status_code == 200


def test_read_errors_fail_gets_but_not_creates(sandbox: SandboxProcess) -> None:
    sandbox.set_faults(read_error_5xx_share=1.0)

    created = post_call(sandbox, 11)
    read = httpx.get(
        f"{sandbox.base_url}/v1/calls/{created.json()['call_id']}", headers=sandbox.headers
    )
    listed = httpx.get(f"{sandbox.base_url}/v1/calls", headers=sandbox.headers)

    assert created.status_code == 200
    assert (read.status_code, listed.status_code) == (500, 500)
    assert read.json() == {"status": "error", "message": "Internal server error."}


def test_duplicated_webhooks_arrive_twice_with_the_same_body(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    sandbox.set_faults(webhook_duplicate_share=1.0)

    post_call(sandbox, 12, webhook=webhook_receiver.url)
    sandbox.wait_until(lambda: len(webhook_receiver.received) == 2)

    first, second = webhook_receiver.received
    assert first.body == second.body
    assert first.signature_valid(sandbox.webhook_secret)
    assert second.signature_valid(sandbox.webhook_secret)


def test_webhook_delay_holds_the_webhook_back(
    sandbox: SandboxProcess, webhook_receiver: WebhookReceiver
) -> None:
    # 200 simulated seconds at the helper's 200x clock: about one real second.
    sandbox.set_faults(webhook_delay_s=200)
    sandbox.set_outcomes(human=0, voicemail=0, no_answer=0, busy=1, failed=0)

    call_id = post_call(sandbox, 13, webhook=webhook_receiver.url).json()["call_id"]
    sandbox.wait_until(lambda: len(webhook_receiver.received) == 1)

    ended_at = datetime.fromisoformat(sandbox.get_call(call_id)["end_at"])
    assert webhook_receiver.received[0].received_at - ended_at >= timedelta(seconds=0.95)
