"""`dialer sandbox` as a user starts it: the documented command, nothing added."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sandbox import WebhookReceiver, free_port, is_quiet
from tests.support.waits import until_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIALER = Path(sys.executable).parent / "dialer"
START_DEADLINE_S = 120.0  # `dialer` imports the whole service: minutes on a starved box


@pytest.fixture
def dialer_sandbox(tmp_path: Path) -> Iterator[str]:
    """`dialer sandbox --port P --webhook-secret s`, stopped afterwards."""
    port = free_port()
    with (tmp_path / "sandbox.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own entry point, no shell
            [str(DIALER), "sandbox", "--port", str(port), "--webhook-secret", "s"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, (tmp_path / "sandbox.log").read_text()
        try:
            return httpx.get(base_url + "/_sandbox/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    until_sync(answering, "`dialer sandbox` answers", timeout_s=START_DEADLINE_S)
    yield base_url
    process.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert process.wait(timeout=10) in {0, -signal.SIGTERM}


def test_dialer_sandbox_queues_a_call_and_delivers_a_signed_webhook(
    dialer_sandbox: str, webhook_receiver: WebhookReceiver
) -> None:
    response = httpx.post(
        dialer_sandbox + "/v1/calls",
        json={"phone_number": "+14155550123", "task": "Hi", "webhook": webhook_receiver.url + "/h"},
        headers={"Authorization": "any-key"},
    )

    body = response.json()
    assert response.status_code == 200
    assert body == {
        "status": "success",
        "message": "Call successfully queued.",
        "call_id": body["call_id"],
        "batch_id": None,
    }
    assert str(uuid.UUID(body["call_id"])) == body["call_id"]
    until_sync(lambda: bool(webhook_receiver.received), "the call's webhook arrives")
    counts = dialer_sandbox + "/_sandbox/counts"
    until_sync(lambda: is_quiet(httpx.get(counts).json()), "the sandbox has nothing more to do")
    assert len(webhook_receiver.received) == 1
    received = webhook_receiver.received[0]
    assert received.signature_valid("s")
    assert json.loads(received.body)["call_id"] == body["call_id"]
