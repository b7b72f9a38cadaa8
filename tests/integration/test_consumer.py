"""RequestConsumer on the real broker and ledger: accept, reject, dead-letter, dedupe, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.envelope import content_request_id
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import (
    drain,
    publish_json,
    publish_raw,
    publish_without_message_id,
    queue_depth,
)
from tests.support.ledger import claim as claim_round
from tests.support.sandbox import SandboxFactory
from tests.support.stack import Stack, build_stack
from tests.support.tcpproxy import TcpProxy
from tests.support.waits import DEADLINE_S

pytestmark = pytest.mark.integration

VALID = {"phone_number": "+15555550142", "task": "Say hello."}
STOPS_SENT, SENT = "dialer_call_stops_total", {"result": "sent"}


@pytest.fixture
async def stack(broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    """The consumer and relay on SQLite."""
    settings = Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)
    built = await build_stack(settings)
    yield built
    await built.close()


async def test_a_valid_request_is_written_acked_and_announced(
    broker: Broker, database_url: str
) -> None:
    settings = Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=database_url)
    s = await build_stack(settings)
    try:
        body = {**VALID, "dialer": {"priority": 7}}
        await publish_json(settings, body, message_id="req-1", correlation_id="corr-1")
        seen = await s.tap.wait_for(lambda seen: len(seen) >= 1)
        assert seen[0].routing_key == "call.accepted"
        assert seen[0].body["request_id"] == "req-1"
        assert seen[0].body["correlation_id"] == "corr-1"
        assert seen[0].message.correlation_id == "corr-1"
        (row,) = await s.rows()
        assert (row.request_id, row.state, row.priority) == ("req-1", "pending", 7)
        assert "dialer" not in json.loads(row.body)
        assert await queue_depth(settings, f"{settings.prefix}.requests") == 0
        consumed = s.metrics.requests_consumed.labels("call.create", "accepted")._value.get()
        assert consumed == 1
    finally:
        await s.close()


Undecodable = tuple[bytes, dict[str, str], str, str]  # body, properties, reason, error text
NOT_JSON: Undecodable = (b"{not json", {}, "invalid_json", "not valid JSON")
NOT_UTF8: Undecodable = (b'{"phone_number": "\xff\xfe"}', {}, "invalid_encoding", "UTF-8")
ARRAY: Undecodable = (json.dumps([VALID]).encode(), {}, "invalid_json", "JSON object")
TEXT: Undecodable = (
    json.dumps(VALID).encode(),
    {"content_type": "text/plain"},
    "invalid_content_type",
    "",
)
GZIP: Undecodable = (
    json.dumps(VALID).encode(),
    {"content_encoding": "gzip"},
    "invalid_encoding",
    "gzip",
)
HUGE: Undecodable = (b'{"task": "' + b"x" * (5 * 1024 * 1024) + b'"}', {}, "too_large", "limit")


# Under the size cap, but 1,000 levels deep: json.loads raised RecursionError (finding 3).
NESTED: Undecodable = (
    b'{"phone_number": "+15555550142", "task": "hi", "metadata": '
    + b'{"a": ' * 1000
    + b"1"
    + b"}" * 1001,
    {},
    "invalid_json",
    "nested",
)
# Valid JSON holding a lone surrogate: it passed validation and failed in the ledger write.
SURROGATE: Undecodable = (
    b'{"phone_number": "+15555550142", "task": "hi \\ud800"}',
    {},
    "invalid_encoding",
    "surrogate",
)


@pytest.mark.parametrize(
    ("body", "props", "reason", "error"),
    [NOT_JSON, NOT_UTF8, ARRAY, TEXT, GZIP, HUGE, NESTED, SURROGATE],
    ids=["not-json", "not-utf8", "array", "text-plain", "gzip", "5MiB", "nested", "surrogate"],
)
async def test_undecodable_requests_are_dead_lettered_and_rejected(
    stack: Stack, body: bytes, props: dict[str, Any], reason: str, error: str
) -> None:
    await publish_raw(stack.settings, body, message_id="bad-1", **props)
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 1)
    assert seen[0].routing_key == "call.rejected"
    assert seen[0].body["reason"] == reason
    assert error in seen[0].body["errors"][0]
    dead = await drain(stack.settings, f"{stack.settings.prefix}.dead")
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["x-dialer-reason"] == reason
    assert headers["x-dialer-request-id"] == "bad-1"
    assert headers["x-dialer-routing-key"] == "call.create"
    assert dead[0].body == body
    assert dead[0].message_id == "bad-1"
    assert [r.state for r in await stack.rows()] == ["rejected"]
    assert stack.metrics.dead_letters.labels(reason)._value.get() == 1
    assert stack.consumer.ready


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"task": "hi"}, "Missing required parameter: phone_number."),
        ({"phone_number": "12", "task": "x"}, "Invalid phone number"),
        ({**VALID, "max_duration": "long"}, "Max duration must be a number"),
        ({**VALID, "colour": "red"}, "'colour' was unexpected"),
        ({**VALID, "dialer": {"priority": 42}}, "dialer.priority must be at most 9."),
    ],
    ids=["missing-phone", "bad-phone", "wrong-type", "unknown-field", "bad-dialer-option"],
)
async def test_schema_invalid_requests_are_rejected_with_bland_errors(
    stack: Stack, body: dict[str, Any], error: str
) -> None:
    await publish_json(stack.settings, body, message_id="bad-2")
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 1)
    assert seen[0].routing_key == "call.rejected"
    assert seen[0].body["reason"] == "invalid_request"
    assert any(error in e for e in seen[0].body["errors"]), seen[0].body["errors"]
    assert [(r.request_id, r.state) for r in await stack.rows()] == [("bad-2", "rejected")]
    assert await queue_depth(stack.settings, f"{stack.settings.prefix}.dead") == 0
    assert stack.consumer.ready


async def test_every_invalid_input_leaves_nothing_dialable_and_the_consumer_running(
    stack: Stack,
) -> None:
    bad: list[tuple[bytes, dict[str, Any]]] = [
        (NOT_JSON[0], {}),
        (NOT_UTF8[0], {}),
        (HUGE[0], {}),
        (json.dumps({"task": "x"}).encode(), {}),
        (json.dumps({**VALID, "colour": 1}).encode(), {}),
    ]
    for i, (body, props) in enumerate(bad):
        await publish_raw(stack.settings, body, message_id=f"bad-{i}", **props)
    await publish_json(stack.settings, VALID, message_id="good")
    await stack.tap.wait_for(lambda seen: len(seen) >= len(bad) + 1)
    states = {r.request_id: r.state for r in await stack.rows()}
    assert states.pop("good") == "pending"
    assert set(states.values()) == {"rejected"}
    assert len(states) == len(bad)
    assert stack.consumer.ready


async def test_unsupported_kinds_are_rejected_naming_the_kind(stack: Stack) -> None:
    await publish_json(stack.settings, {"x": 1}, routing_key="call.explode", message_id="k-1")
    await publish_json(
        stack.settings, {"call_data": []}, routing_key="batch.create", message_id="k-2"
    )
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 2)
    by_id = {s.body["request_id"]: s for s in seen}
    assert by_id["k-1"].routing_key == "call.rejected"
    assert by_id["k-1"].body["reason"] == "unsupported_kind"
    assert "call.explode" in by_id["k-1"].body["errors"][0]
    assert by_id["k-2"].routing_key == "batch.rejected"  # a batch, invalid as a whole
    assert by_id["k-2"].body["reason"] == "invalid_request"


async def test_the_amqp_type_names_the_kind_when_the_routing_key_does_not(stack: Stack) -> None:
    await publish_json(stack.settings, VALID, routing_key="tenant-7", type="call.create")
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 1)
    assert seen[0].routing_key == "call.accepted"


async def test_one_message_id_five_times_is_one_row_and_four_reannouncements(stack: Stack) -> None:
    for _ in range(5):
        await publish_json(stack.settings, VALID, message_id="dup-1")
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 5)
    assert [s.routing_key for s in seen] == ["call.accepted"] * 5
    assert [s.body["duplicate"] for s in seen].count(True) == 4
    assert len({s.body["event_id"] for s in seen}) == 5
    assert len(await stack.rows()) == 1
    assert stack.metrics.requests_consumed.labels("call.create", "duplicate")._value.get() == 4


async def test_identical_requests_without_message_id_are_one_request(stack: Stack) -> None:
    await publish_without_message_id(stack.settings, json.dumps(VALID).encode())
    reordered = json.dumps(dict(reversed(VALID.items())), indent=2).encode()
    await publish_without_message_id(stack.settings, reordered)
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 2)
    (row,) = await stack.rows()
    assert row.request_id == content_request_id("call.create", json.dumps(VALID).encode())
    assert [s.body["duplicate"] for s in seen] == [False, True]


async def test_a_pending_request_is_canceled_and_an_unknown_one_refused(stack: Stack) -> None:
    await publish_json(stack.settings, VALID, message_id="c-1")
    await publish_json(stack.settings, {"request_id": "c-1"}, routing_key="call.cancel")
    await publish_json(
        stack.settings, {"request_id": "nope"}, routing_key="call.cancel", message_id="cx"
    )
    seen = await stack.tap.wait_for(lambda seen: len(seen) >= 3)
    assert [s.routing_key for s in seen] == ["call.accepted", "call.canceled", "call.rejected"]
    assert "nope" in seen[2].body["errors"][0]
    states = {r.request_id: r.state for r in await stack.rows()}
    # The unknown id is kept canceled: a create of it arriving later is never dialed.
    assert states == {"c-1": "canceled", "cx": "rejected", "nope": "canceled"}
    # No stop asked of Bland: nothing was dialed (the series exists from the start, at 0).
    assert (
        stack.metrics.registry.get_sample_value("dialer_call_stops_total", {"result": "sent"}) == 0
    )


async def test_with_our_webhook_the_publishers_is_kept_aside(
    broker: Broker, sqlite_url: str
) -> None:
    settings = Settings(
        prefix=broker.prefix,
        amqp_url=broker.url,
        database_url=sqlite_url,
        webhook_url="https://dialer.example/webhooks/bland",
    )
    s = await build_stack(settings)
    try:
        body = {**VALID, "webhook": "https://publisher.example/hook"}
        await publish_json(settings, body, message_id="w-1")
        (row,) = await s.wait_rows(1)
        assert row.publisher_webhook == "https://publisher.example/hook"
        assert "webhook" not in json.loads(row.body)
    finally:
        await s.close()


@pytest.mark.slow
async def test_a_database_outage_pauses_without_burning_the_delivery_limit(
    broker: Broker, postgres_url: str
) -> None:
    proxy = await TcpProxy.for_url(postgres_url).start()
    settings = Settings(
        prefix=broker.prefix,
        amqp_url=broker.url,
        database_url=proxy.url(postgres_url),
        delivery_limit=1,
    )
    s = await build_stack(settings)
    s.consumer.store_retry_max_s = 0.2
    try:
        proxy.cut()
        await publish_json(settings, VALID, message_id="out-1")
        await publish_json(settings, {**VALID, "task": "Two."}, message_id="out-2")
        await wait_until(lambda: s.consumer.paused)
        assert not s.consumer.ready
        # Many store retries while holding the deliveries: each would have burned one.
        await wait_until(lambda: s.consumer.ledger_retries >= 8)
        proxy.restore()
        await wait_until(lambda: s.consumer.ready)
        await publish_json(settings, {**VALID, "task": "Three."}, message_id="out-3")
        rows = await s.wait_rows(3)
        assert {r.request_id: r.state for r in rows} == {
            "out-1": "pending",
            "out-2": "pending",
            "out-3": "pending",
        }
        assert await queue_depth(settings, f"{settings.prefix}.dead") == 0
        assert await queue_depth(settings, f"{settings.prefix}.requests") == 0
        accepted = s.metrics.requests_consumed.labels("call.create", "accepted")._value.get()
        assert accepted == 3
    finally:
        await s.close()
        await proxy.close()


async def test_stop_drains_what_was_delivered_and_acks_it(stack: Stack) -> None:
    for i in range(20):
        await publish_json(stack.settings, {**VALID, "task": f"n{i}"}, message_id=f"d-{i}")
    await wait_until(
        lambda: stack.metrics.requests_consumed.labels("call.create", "accepted")._value.get() >= 1
    )
    await stack.consumer.stop(10.0)
    assert not stack.consumer.ready
    settled = {r.request_id for r in await stack.rows()}
    left = await queue_depth(stack.settings, f"{stack.settings.prefix}.requests")
    assert len(settled) + left == 20  # nothing both written and left unacked, nothing lost


async def wait_until(predicate: Any, timeout_s: float = DEADLINE_S) -> None:
    """Poll a condition."""
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
async def test_the_consumer_resumes_after_the_broker_link_is_cut(
    broker: Broker, sqlite_url: str
) -> None:
    proxy = await TcpProxy.for_url(broker.url).start()
    direct = Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)
    url = proxy.url(broker.url) + "?reconnect_interval=0.5"
    settings = direct.model_copy(update={"amqp_url": SecretStr(url)})
    s = await build_stack(settings)
    try:
        await publish_json(direct, VALID, message_id="before")
        await s.wait_rows(1)
        proxy.cut()
        await wait_until(lambda: not s.consumer.ready)
        await publish_json(direct, {**VALID, "task": "During."}, message_id="during")
        proxy.restore()
        rows = await s.wait_rows(2, timeout_s=20.0)
        assert {r.request_id for r in rows} == {"before", "during"}
        await wait_until(lambda: s.consumer.ready)
        await publish_json(direct, {**VALID, "task": "After."}, message_id="after")
        assert len(await s.wait_rows(3)) == 3
        assert await queue_depth(direct, f"{broker.prefix}.requests") == 0
    finally:
        await s.close()
        await proxy.close()


async def test_canceling_a_live_call_asks_bland_to_stop_it(
    broker: Broker, sqlite_url: str, sandbox_factory: SandboxFactory
) -> None:
    sandbox = sandbox_factory(clock_speed=1.0)  # real time: the call rings for 30 s
    sandbox.set_outcomes(human=0, voicemail=0, no_answer=1, busy=0, failed=0)
    settings = Settings(
        prefix=broker.prefix,
        amqp_url=broker.url,
        database_url=sqlite_url,
        bland_base_url=sandbox.base_url,
        bland_api_key=sandbox.api_key,
    )
    s = await build_stack(settings)
    try:
        await publish_json(settings, VALID, message_id="live-1")
        await s.wait_rows(1)
        now = datetime.now(UTC)
        (claim,) = await claim_round(s.ledger, now=now, limit=1)
        call_id = await s.parts.bland.create_call(VALID)
        assert (await s.ledger.record_queued(claim, call_id, now)).recorded
        await publish_json(settings, {"call_id": call_id}, routing_key="call.cancel")
        await wait_until(lambda: sandbox.get_call(call_id)["status"] == "canceled")
        # Bland's answer to the stop is counted once it is read: wait for it too.
        await wait_until(lambda: s.metrics.registry.get_sample_value(STOPS_SENT, SENT) == 1)
        outcome = s.metrics.requests_consumed.labels("call.cancel", "cancel_queued")
        assert outcome._value.get() == 1
    finally:
        await s.close()
