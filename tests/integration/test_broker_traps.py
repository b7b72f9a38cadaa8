"""The broker and aio-pika behaviours our design relies on (field-notes §1), pinned down."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from aiormq.abc import DeliveredMessage

from tests.conftest import Broker
from tests.support.bus import next_message

pytestmark = pytest.mark.integration


async def ready(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Messages ready in the queue (a passive declare on the underlying channel, not cached)."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(name, passive=True)
    return declared.message_count or 0


async def test_an_unroutable_publish_is_silent_unless_returns_raise(broker: Broker) -> None:
    connection = await aio_pika.connect(broker.url)
    async with connection:
        quiet = await connection.channel()  # aio-pika's default: on_return_raises=False
        exchange = await quiet.declare_exchange(broker.names[1], aio_pika.ExchangeType.TOPIC)
        result = await exchange.publish(aio_pika.Message(b"x"), routing_key="nobody.bound")
        assert isinstance(result, DeliveredMessage)  # returned, yet no exception: a silent loss
        loud = await connection.channel(on_return_raises=True)
        loud_exchange = await loud.get_exchange(broker.names[1], ensure=False)
        with pytest.raises(aio_pika.exceptions.PublishError):
            await loud_exchange.publish(aio_pika.Message(b"x"), routing_key="nobody.bound")
        # PublishError is a DeliveryError: catch it first to tell "unroutable" from "nacked".
        assert issubclass(aio_pika.exceptions.PublishError, aio_pika.exceptions.DeliveryError)


async def test_deleting_a_quorum_queue_with_default_flags_closes_the_connection(
    broker: Broker,
) -> None:
    name = f"{broker.prefix}.trap"
    broker.extra_queues.append(name)
    connection = await aio_pika.connect(broker.url)
    channel = await connection.channel()
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    with pytest.raises(aio_pika.exceptions.AMQPError):
        await queue.delete()  # if_unused=True, if_empty=True: 540 NOT_IMPLEMENTED
    with pytest.raises((aio_pika.exceptions.AMQPError, RuntimeError)):
        await connection.channel()  # the whole connection went down, not just the channel
    await connection.close()
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name, if_unused=False, if_empty=False)
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await (await connection.channel()).declare_queue(name, passive=True)


async def test_process_rejects_without_requeue_and_the_message_is_gone(broker: Broker) -> None:
    name = f"{broker.prefix}.trap"
    broker.extra_queues.append(name)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)  # no dead-letter exchange
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
        message = await queue.get(timeout=5)
        assert message is not None
        with pytest.raises(RuntimeError):
            async with message.process():  # defaults: requeue=False
                raise RuntimeError("handler bug")
        # A marker published after the reject: a requeued message would come out before it.
        await channel.default_exchange.publish(aio_pika.Message(b"marker"), routing_key=name)
        assert (await next_message(queue)).body == b"marker"  # dropped: no trace anywhere


@pytest.mark.parametrize("requeue_how", ["reject", "nack"])
async def test_every_requeue_counts_toward_the_delivery_limit(
    broker: Broker, requeue_how: str
) -> None:
    name, dead = f"{broker.prefix}.trap", f"{broker.prefix}.trapdead"
    broker.extra_queues.extend([name, dead])
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(dead, durable=True)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 3,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead,
            },
        )
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
        counts = []
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            counts.append(message.headers.get("x-delivery-count", 0))
            if requeue_how == "reject":
                await message.reject(requeue=True)
            else:
                await message.nack(requeue=True)
        assert counts == [0, 1, 2, 3]
        dead_queue = await channel.get_queue(dead, ensure=False)
        dead_message = await next_message(dead_queue)  # dead-lettering is asynchronous
        assert dead_message.headers["x-first-death-reason"] == "delivery_limit"


async def test_a_delivery_held_after_cancelling_the_consumer_can_still_be_acked(
    broker: Broker,
) -> None:
    """What the consumer's pause relies on: holding costs no delivery count, acking later works."""
    name = f"{broker.prefix}.trap"
    broker.extra_queues.append(name)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 1}
        )
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
        got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(got.put, no_ack=False)
        message = await asyncio.wait_for(got.get(), 5)
        await queue.cancel(tag)
        # A marker confirmed after the cancel: by then the queue has applied the cancel, and a
        # delivery given back would be ready beside it.
        await channel.default_exchange.publish(aio_pika.Message(b"marker"), routing_key=name)
        assert await ready(channel, name) == 1
        await message.ack()
        # An unknown delivery tag would have closed the channel before the get answers.
        assert (await next_message(queue)).body == b"marker"
        assert await queue.get(fail=False) is None
        assert not channel.is_closed


async def test_aiormq_invents_a_message_id_when_the_publisher_gives_none(broker: Broker) -> None:
    """So aio-pika publishers never get content-hash dedup: they must set message_id."""
    name = f"{broker.prefix}.trap"
    broker.extra_queues.append(name)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        for _ in range(2):
            await channel.default_exchange.publish(aio_pika.Message(b"same"), routing_key=name)
        ids = []
        for _ in range(2):
            message = await queue.get(timeout=5)
            assert message is not None
            ids.append(message.message_id)
            await message.ack()
        assert all(ids)
        assert ids[0] != ids[1]
        assert all(uuid.UUID(i) for i in ids)
