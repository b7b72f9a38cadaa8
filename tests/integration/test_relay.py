"""OutboxRelay on the real broker: properties, confirms, returns, nacks, and a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from schemas.envelope import DialerOptions
from service.bus.outbox_relay import OutboxRelay
from service.ledger import Ledger, NewCall
from service.ledger.tables import outbox
from service.metrics import Metrics
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import Tap, migrated_ledger
from tests.support.tcpproxy import TcpProxy
from tests.support.waits import DEADLINE_S

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def call(request_id: str, reply_to: str | None = None) -> NewCall:
    """A valid new call."""
    return NewCall(
        request_id=request_id,
        correlation_id=f"corr-{request_id}",
        reply_to=reply_to,
        phone_number="+15555550142",
        body={"phone_number": "+15555550142", "task": "Hi."},
        options=DialerOptions(),
        publisher_webhook=None,
    )


async def outbox_rows(ledger: Ledger) -> list[Any]:
    """Every outbox row."""
    async with ledger.engine.connect() as conn:
        return list((await conn.execute(select(outbox).order_by(outbox.c.id))).all())


async def until(predicate: Any, timeout_s: float = DEADLINE_S) -> None:
    """Poll an async condition."""
    for _ in range(int(timeout_s / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def all_sent(ledger: Ledger) -> bool:
    """True when no event is pending."""
    return all(row.sent_at is not None for row in await outbox_rows(ledger))


@pytest.fixture
def settings(broker: Broker, database_url: str) -> Settings:
    """Settings on this test's prefix and ledger (SQLite, and PostgreSQL with leased rows)."""
    return Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=database_url)


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Ledger]:
    """A migrated ledger."""
    instance = await migrated_ledger(settings)
    yield instance
    await instance.close()


@pytest.fixture
async def relay(settings: Settings, ledger: Ledger) -> AsyncIterator[OutboxRelay]:
    """A started relay."""
    instance = OutboxRelay(settings, ledger, Metrics(CollectorRegistry()), lease_s=0.5)
    await instance.start()
    yield instance
    await instance.stop(5.0)


async def test_events_carry_their_properties_and_are_marked_sent(
    settings: Settings, ledger: Ledger, relay: OutboxRelay
) -> None:
    tap = await Tap.open(settings, f"{settings.prefix}.events")
    try:
        await ledger.accept_calls([call("r-1")], NOW)
        (seen,) = await tap.wait_for(lambda seen: len(seen) >= 1)
        (row,) = await outbox_rows(ledger)
        m = seen.message
        assert seen.routing_key == m.type == "call.accepted"
        assert m.message_id == row.event_id == seen.body["event_id"]
        assert m.correlation_id == "corr-r-1"
        assert m.content_type == "application/json"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert m.app_id == "bland-dialer"
        assert m.headers == {"request_id": "r-1", "schema_version": 1}
        assert m.timestamp is not None
        await until(lambda: all_sent(ledger))
        assert relay.metrics.events_published.labels("call.accepted")._value.get() == 1
    finally:
        await tap.close()


async def test_an_event_nobody_subscribed_to_is_marked_sent_and_counted(
    ledger: Ledger, relay: OutboxRelay
) -> None:
    await ledger.accept_calls([call("r-1"), call("r-2")], NOW)
    await until(lambda: all_sent(ledger))
    assert relay.metrics.events_unroutable.labels("events")._value.get() == 2
    assert relay.ready


async def test_reply_to_gets_a_copy_and_a_missing_reply_queue_blocks_nothing(
    settings: Settings, ledger: Ledger, relay: OutboxRelay, broker: Broker
) -> None:
    reply_queue = f"{settings.prefix}.replies"
    broker.extra_queues.append(reply_queue)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(reply_queue, durable=True)
        await ledger.accept_calls([call("r-1", reply_queue), call("r-2", "no-such-queue")], NOW)
        await until(lambda: all_sent(ledger))
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.type == "call.accepted"
        assert message.headers["request_id"] == "r-1"
        await message.ack()
    assert relay.metrics.events_unroutable.labels("reply_to")._value.get() == 1


async def test_a_broker_nack_keeps_the_event_pending_until_it_is_taken(
    settings: Settings, ledger: Ledger, relay: OutboxRelay, broker: Broker
) -> None:
    full = f"{settings.prefix}.full"
    broker.extra_queues.append(full)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            full,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"},
        )
        await queue.bind(f"{settings.prefix}.events", "#")
        with contextlib.suppress(aio_pika.exceptions.DeliveryError):
            for _ in range(5):  # fill it until the broker nacks (it overshoots by one)
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), full)
        await ledger.accept_calls([call("r-1")], NOW)
        await until(lambda: asyncio.sleep(0, result=relay.failures >= 2))
        assert not relay.ready
        assert not await all_sent(ledger)
        await queue.purge()
        await until(lambda: all_sent(ledger))
        assert relay.ready


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_events_survive_a_broker_outage(
    settings: Settings, ledger: Ledger, broker: Broker
) -> None:
    tap = await Tap.open(settings, f"{settings.prefix}.events")
    proxy = await TcpProxy.for_url(broker.url).start()
    relay = OutboxRelay(
        settings,
        ledger,
        Metrics(CollectorRegistry()),
        amqp_url=proxy.url(broker.url) + "?reconnect_interval=0.5",
        confirm_timeout_s=2.0,
        lease_s=1.0,
    )
    await relay.start()
    try:
        await ledger.accept_calls([call(f"a-{i}") for i in range(10)], NOW)
        await until(lambda: all_sent(ledger))
        proxy.cut()
        await ledger.accept_calls([call(f"b-{i}") for i in range(10)], NOW)
        # Rounds that tried them and failed: none of them may be taken for sent.
        await until(lambda: asyncio.sleep(0, result=relay.failures >= 2))
        assert sum(row.sent_at is None for row in await outbox_rows(ledger)) == 10
        proxy.restore()
        await until(lambda: all_sent(ledger))
        expected = {row.event_id for row in await outbox_rows(ledger)}
        await tap.wait_for(lambda seen: {s.body["event_id"] for s in seen} >= expected)
    finally:
        await relay.stop(5.0)
        await proxy.close()
        await tap.close()


async def test_a_wake_publishes_now_not_at_the_next_poll(
    settings: Settings, ledger: Ledger
) -> None:
    slow = settings.model_copy(update={"outbox_idle_s": 3600.0})
    relay = OutboxRelay(slow, ledger, Metrics(CollectorRegistry()), lease_s=0.5)
    await ledger.accept_calls([call("r-0")], NOW)
    await relay.start()
    try:
        await until(lambda: all_sent(ledger))  # then an empty round, then an hour-long idle
        await ledger.accept_calls([call("r-1")], NOW)
        relay.wake()
        await until(lambda: all_sent(ledger))
    finally:
        await relay.stop(5.0)
