"""Shared fixtures: the real broker, the real databases, isolated per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest

from service.ledger import Ledger
from service.ledger.migrate import upgrade
from service.settings import Settings

pytest_plugins = ["tests.support.sandbox"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
HOW_TO_GET_A_BROKER = (
    "No RabbitMQ broker for the integration tests. Set DIALER_TEST_AMQP_URL, start one on "
    "127.0.0.1:5672 (`bash .ci/services` installs and starts one), or run where Docker works "
    "so testcontainers can start one."
)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _start_container() -> Any:
    """A throwaway RabbitMQ in Docker (only where a Docker engine runs)."""
    from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415 - optional, Docker-only

    container = RabbitMqContainer("rabbitmq:3.13-management")
    container.start()
    return container


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The broker: DIALER_TEST_AMQP_URL, else localhost:5672, else testcontainers, else fail."""
    explicit = os.environ.get("DIALER_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if _port_open("127.0.0.1", 5672):
        yield DEFAULT_AMQP_URL
        return
    try:
        container = _start_container()
    except Exception as exc:  # any Docker or import failure means: no broker here
        pytest.fail(f"{HOW_TO_GET_A_BROKER} ({exc})")
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"
    finally:
        container.stop()


@dataclass
class Broker:
    """A uuid prefix on the shared broker; everything named with it is deleted afterwards."""

    url: str
    prefix: str
    extra_queues: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The standard names of the topology under this prefix."""
        return [f"{self.prefix}.requests", f"{self.prefix}.events", f"{self.prefix}.dead"]

    async def cleanup(self) -> None:
        """Delete this test's queues and exchanges (quorum queues need if_unused/if_empty off)."""
        connection = await aio_pika.connect(self.url)
        async with connection:
            for name in [*self.names, *self.extra_queues]:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
            for name in self.names:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    await channel.exchange_delete(name, if_unused=False)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    """The shared broker with a fresh prefix for this test."""
    instance = Broker(url=amqp_url, prefix=f"t{uuid.uuid4().hex[:12]}")
    yield instance
    await asyncio.wait_for(instance.cleanup(), timeout=30)


def postgres_base_url() -> str:
    """The PostgreSQL server for tests (a database on it is created per test)."""
    return os.environ.get("DIALER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def _admin(sql: str) -> None:
    parts = urlsplit(postgres_base_url().replace("postgresql+asyncpg", "postgresql"))
    conn = await asyncpg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {postgres_base_url()}: {exc}")
    parts = urlsplit(postgres_base_url())
    yield parts._replace(path=f"/{name}").geturl()
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite ledger file for this test."""
    return f"sqlite+aiosqlite:///{(tmp_path / 'ledger.db').as_posix()}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each ledger test runs on both databases."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{(tmp_path / 'ledger.db').as_posix()}"
        return
    name = f"t_{uuid.uuid4().hex[:16]}"
    await _admin(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_base_url())
    yield parts._replace(path=f"/{name}").geturl()
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """A ledger on a fresh, migrated database (SQLite and PostgreSQL), default settings."""
    settings = Settings(database_url=database_url)
    await upgrade(settings)
    instance = await Ledger.open(settings)
    yield instance
    await instance.close()
