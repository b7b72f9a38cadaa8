"""A delivery whose AMQP properties the client library cannot read costs at most itself.

Before the guard (service/bus/guard.py), pamqp raised while decoding such a frame, aiormq
closed the whole connection, every unacked delivery went back to the quorum queue and, after
a few reconnects, the broker dead-lettered the whole prefetch window (finding 1 of issue 9).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.bus.guard import UnreadableTimestamp
from service.commands.dead_letters import list_dead, replay
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import drain, publish_json, publish_with_raw_properties, queue_depth
from tests.support.stack import Stack, build_stack
from tests.support.waits import until

pytestmark = pytest.mark.integration

VALID = {"phone_number": "+15555550142", "task": "Say hello."}
MALFORMED: dict[str, dict[str, Any]] = {
    "correlation_id": {"correlation_id": b"\xff\xfe", "message_id": "bad-corr"},
    "timestamp": {"timestamp": 1_700_000_000_000_000, "message_id": "bad-ts"},
    "type": {"type": b"call.\xff", "message_id": "bad-type"},
    "message_id": {"message_id": b"id-\xff"},
    "header_key": {"headers": {b"x-\xff": "ok"}, "message_id": "bad-header"},
}


@pytest.fixture
async def stack(broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    """The consumer and relay on SQLite, a tap on the events."""
    settings = Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)
    built = await build_stack(settings)
    yield built
    await built.close()


async def test_malformed_properties_cost_only_themselves(stack: Stack) -> None:
    settings = stack.settings
    for i in range(20):
        await publish_json(settings, {**VALID, "task": f"Before {i}."}, message_id=f"ok-{i}")
    for props in MALFORMED.values():
        body = json.dumps({**VALID, "task": "Malformed."}).encode()
        await publish_with_raw_properties(settings, body, **props)
    for i in range(20, 40):
        await publish_json(settings, {**VALID, "task": f"After {i}."}, message_id=f"ok-{i}")

    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 40 + len(MALFORMED))

    accepted = {s.body["request_id"] for s in seen if s.routing_key == "call.accepted"}
    rejected = [s.body for s in seen if s.routing_key == "call.rejected"]
    assert accepted == {f"ok-{i}" for i in range(40)}
    assert len(rejected) == len(MALFORMED)
    assert {r["reason"] for r in rejected} == {"unreadable_properties"}
    assert any("correlation_id is not UTF-8" in e for r in rejected for e in r["errors"])
    assert any("timestamp 1700000000000000" in e for r in rejected for e in r["errors"])
    assert stack.consumer.ready  # the connection survived every one of them
    dead = await drain(settings, f"{settings.prefix}.dead")
    assert [(m.headers or {}).get("x-dialer-reason") for m in dead] == ["unreadable_properties"] * 5
    assert not any("x-first-death-reason" in (m.headers or {}) for m in dead)
    copies = {m.message_id: m for m in dead}
    assert copies["bad-corr"].correlation_id == "\udcff\udcfe"  # the bytes, kept as sent
    assert isinstance(copies["bad-ts"].timestamp, UnreadableTimestamp)
    assert await queue_depth(settings, f"{settings.prefix}.requests") == 0


async def test_the_dead_letter_tools_read_and_replay_any_bytes(stack: Stack) -> None:
    settings = stack.settings
    for props in MALFORMED.values():
        await publish_with_raw_properties(settings, b"\xff not even text", **props)

    async def all_dead() -> bool:
        return await queue_depth(settings, f"{settings.prefix}.dead") == len(MALFORMED)

    await until(all_dead, "every message dead-lettered")
    await stack.consumer.stop(5.0)

    out = io.StringIO()
    assert await list_dead(settings, 10, out, as_json=True) == len(MALFORMED)
    listed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {item["reason"] for item in listed} == {"unreadable_properties"}
    assert await replay(settings, None, None, io.StringIO()) == len(MALFORMED)
    assert await queue_depth(settings, f"{settings.prefix}.requests") == len(MALFORMED)
