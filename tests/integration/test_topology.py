"""The declared topology: idempotent, arguments in force (delivery limit, DLX), CLI."""

from __future__ import annotations

import aio_pika
import pytest

from service.bus.topology import declare
from service.commands.cli import main
from service.errors import ConfigError
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import next_message

pytestmark = pytest.mark.integration


def settings_for(broker: Broker, **overrides: object) -> Settings:
    """Settings on this test's prefix."""
    return Settings(prefix=broker.prefix, amqp_url=broker.url, **overrides)  # type: ignore[arg-type]


async def test_declaring_twice_is_fine(broker: Broker) -> None:
    settings = settings_for(broker)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        first = await declare(await connection.channel(), settings)
        second = await declare(await connection.channel(), settings)
        assert first.requests_queue.name == second.requests_queue.name == broker.names[0]


async def test_a_different_delivery_limit_is_a_config_error_naming_the_setting(
    broker: Broker,
) -> None:
    connection = await aio_pika.connect(broker.url)
    async with connection:
        await declare(await connection.channel(), settings_for(broker, delivery_limit=3))
        with pytest.raises(ConfigError, match="DIALER_DELIVERY_LIMIT"):
            await declare(await connection.channel(), settings_for(broker, delivery_limit=4))


async def test_a_poison_message_goes_to_dead_after_the_delivery_limit(broker: Broker) -> None:
    settings = settings_for(broker, delivery_limit=2)
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel()
        topology = await declare(channel, settings)
        await topology.requests_exchange.publish(
            aio_pika.Message(b"{}", message_id="poison"), routing_key="call.create"
        )
        counts = []
        for _ in range(10):
            message = await topology.requests_queue.get(fail=False, timeout=5)
            if message is None:
                break
            counts.append(message.headers.get("x-delivery-count", 0))
            await message.reject(requeue=True)
        assert counts == [0, 1, 2]  # the first get has 0; after the limit it is dead
        dead = await next_message(topology.dead_queue)  # dead-lettering is asynchronous
        assert dead.message_id == "poison"
        assert dead.routing_key == "call.create"
        assert dead.headers["x-first-death-reason"] == "delivery_limit"
        await dead.ack()


async def test_the_dead_letter_queue_takes_any_routing_key(broker: Broker) -> None:
    connection = await aio_pika.connect(broker.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings_for(broker))
        for key in ("call.create", "", "weird.key.x"):
            await topology.dead_exchange.publish(aio_pika.Message(b"x"), routing_key=key)
        assert topology.dead_queue.declaration_result.message_count == 0
        again = await channel.declare_queue(broker.names[2], passive=True)
        assert again.declaration_result.message_count == 3


def test_the_topology_command_declares_everything(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIALER_AMQP_URL", broker.url)
    assert main(["topology", "--prefix", broker.prefix]) == 0
    assert main(["topology", "--prefix", broker.prefix]) == 0
    out = capsys.readouterr().out
    assert f"{broker.prefix}.requests" in out
    assert f"{broker.prefix}.dead" in out
