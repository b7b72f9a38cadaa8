"""Review: a cancel that overtakes its create (another replica, a redelivery) still wins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from service.ledger import Ledger
from service.ledger.tables import requests
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import Tap, publish_json
from tests.support.stack import build_stack

pytestmark = pytest.mark.integration

VALID = {"phone_number": "+15555550142", "task": "Say hello."}


@pytest.fixture
async def settings(broker: Broker, sqlite_url: str) -> Settings:
    """Settings on this test's prefix and ledger."""
    return Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[tuple[Ledger, Tap]]:
    """The service's consumer and relay running; a tap on the events."""
    stack = await build_stack(settings)
    yield stack.ledger, stack.tap
    await stack.close()


async def test_a_create_arriving_after_its_cancel_is_never_dialable(
    settings: Settings, running: tuple[Ledger, Tap]
) -> None:
    ledger, tap = running
    await publish_json(
        settings, {"request_id": "late-1"}, routing_key="call.cancel", message_id="cancel-1"
    )
    await tap.wait_for(lambda seen: len(seen) >= 1)
    await publish_json(settings, VALID, message_id="late-1")

    seen = await tap.wait_for(lambda seen: len(seen) >= 2)

    async with ledger.engine.connect() as conn:
        states = {r.request_id: r.state for r in await conn.execute(select(requests))}
    assert states.get("late-1") == "canceled"
    assert [s.routing_key for s in seen] == ["call.rejected", "call.canceled"]
    assert seen[1].body["request_id"] == "late-1"
