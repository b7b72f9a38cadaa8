"""A 10,000-recipient batch through the real consumer with default settings."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import publish_json
from tests.support.stack import Stack, build_stack

pytestmark = pytest.mark.integration
SEED = Path(__file__).parents[2] / "schemas" / "examples" / "renewal-reminder-batch.json"


def seed_shaped(count: int) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(SEED.read_text())
    template = body["call_data"][0]
    body["call_data"] = [
        {**template, "name": f"Person {i}", "phone_number": f"+1415{2000000 + i:07d}"}
        for i in range(count)
    ]
    return body


@pytest.fixture
async def stack(broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    """Consumer and relay with default settings (no dispatcher: nothing is dialed)."""
    settings = Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)
    built = await build_stack(settings)
    yield built
    await built.close()


async def test_ten_thousand_recipients_are_accepted_with_default_settings(stack: Stack) -> None:
    body = seed_shaped(10_000)
    size = len(json.dumps(body).encode())
    assert 1_000_000 < size < Settings().max_body_bytes  # the old default cap was 64 KiB

    started = time.perf_counter()
    await publish_json(stack.settings, body, routing_key="batch.create", message_id="big-1")
    seen = await stack.tap.wait_for(
        lambda seen: any(s.routing_key == "batch.accepted" for s in seen), timeout_s=180
    )
    elapsed_s = time.perf_counter() - started

    accepted = next(s.body for s in seen if s.routing_key == "batch.accepted")
    assert (accepted["recipients"], accepted["rejected"]) == (10_000, 0)
    # Written in chunks: recipients' events were out before the batch was whole.
    kinds = [s.routing_key for s in seen]
    assert kinds.index("call.accepted") < kinds.index("batch.accepted")
    assert len(await stack.wait_rows(10_000, timeout_s=30)) == 10_000
    print(f"10,000 recipients: publish -> batch.accepted in {elapsed_s:.2f} s ({size} bytes)")
