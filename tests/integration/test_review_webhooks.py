"""Review: a signed webhook naming one of our request ids cannot settle a call we never placed."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas.envelope import DialerOptions
from service.ledger import Ledger, NewCall
from service.ledger.migrate import upgrade
from service.metrics import Metrics
from service.outcomes.webhooks import WebhookIntake
from service.settings import Settings
from tests.support.ledger import claim as claim_round
from tests.support.ledger import events, row

pytestmark = pytest.mark.integration

SECRET = "review-secret"
PHONE = "+14157880003"


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[WebhookIntake]:
    """The webhook handler on a fresh ledger."""
    settings = Settings(database_url=database_url, webhook_secret=SECRET)
    await upgrade(settings)
    ledger = await Ledger.open(settings)
    instance = WebhookIntake(settings, ledger, Metrics(CollectorRegistry()))
    yield instance
    await instance.aclose()
    await ledger.close()


def new_call(request_id: str, **options: Any) -> NewCall:
    """A request to PHONE."""
    return NewCall(
        request_id=request_id,
        correlation_id=None,
        reply_to=None,
        phone_number=PHONE,
        body={"phone_number": PHONE, "task": "Say hello."},
        options=DialerOptions(**options),
        publisher_webhook=None,
    )


def signed(payload: dict[str, Any]) -> tuple[bytes, str]:
    """A body and its valid signature."""
    body = json.dumps(payload).encode()
    return body, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def finished(call_id: str, request_id: str) -> dict[str, Any]:
    """A post-call payload for a finished call whose metadata names `request_id`."""
    return {
        "call_id": call_id,
        "completed": True,
        "status": "completed",
        "queue_status": "complete",
        "metadata": {"dialer_request_id": request_id},
    }


async def test_a_webhook_naming_a_pending_request_is_not_its_outcome(
    service: WebhookIntake,
) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    await service.ledger.accept_calls([new_call("req-pending", not_before=later)], now)

    result = await service.handle(*signed(finished("call-x", "req-pending")))

    found = await row(service.ledger, "req-pending")
    assert result.result == "unknown_call"
    assert (found.state, found.call_id) == ("pending", None)
    assert [e.type for e in await events(service.ledger, "req-pending")] == ["call.accepted"]


async def test_a_webhook_for_another_call_of_a_queued_request_changes_nothing(
    service: WebhookIntake,
) -> None:
    now = datetime.now(UTC)
    await service.ledger.accept_calls([new_call("req-queued")], now)
    (claim,) = await claim_round(
        service.ledger,
        owner="t",
        now=now,
        limit=1,
        max_concurrent=5,
        max_per_second=5.0,
        slot_lease_s=60.0,
    )
    assert (await service.ledger.record_queued(claim, "call-real", now)).recorded

    result = await service.handle(*signed(finished("call-other", "req-queued")))

    found = await row(service.ledger, "req-queued")
    assert result.result == "unknown_call"
    assert (found.state, found.call_id) == ("queued", "call-real")
