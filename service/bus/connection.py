"""Broker connection helpers shared by the consumer, the relay and the CLI commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.connection import make_url
from yarl import URL

from service.bus import guard
from service.errors import ConfigError, ServiceUnreachableError
from service.settings import Settings, load_settings

# Every AMQP user of this project (service, consumer, CLI tools) imports this module: one
# malformed property must not close a connection (see service/bus/guard.py).
guard.install()

APP_ID = "bland-dialer"
CLOSE_TIMEOUT_S = 5.0
# Exceptions that mean "the broker or the link to it failed", as opposed to a bug of ours.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,  # a RuntimeError: the channel is closed
    ConnectionError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class Names:
    """Exchange and queue names under a prefix (`dialer.requests`, `dialer.events`, `dialer.dead`)."""

    prefix: str

    @property
    def requests(self) -> str:
        """The requests exchange and its quorum queue (same name)."""
        return f"{self.prefix}.requests"

    @property
    def events(self) -> str:
        """The events exchange (routing key = event type)."""
        return f"{self.prefix}.events"

    @property
    def dead(self) -> str:
        """The dead-letter exchange and its queue (same name)."""
        return f"{self.prefix}.dead"


async def connect(
    settings: Settings, name: str, *, url: str | None = None
) -> AbstractRobustConnection:
    """A robust connection (reconnects and restores channels, topology and consumers).

    A connect that is cancelled or fails closes what it started: aio-pika's reconnection
    task would otherwise outlive it and keep dialing the broker.
    """
    target = with_heartbeat(url or settings.amqp_url.get_secret_value(), settings.amqp_heartbeat_s)
    # The name in the URL too: aio-pika's reconnect warnings show the URL, so each
    # connection's retries are told apart (one line per connection and attempt).
    if "name" not in target.query:
        target = target.update_query(name=f"{APP_ID}/{name}")
    connection = aio_pika.RobustConnection(
        target, client_properties={"connection_name": f"{APP_ID}/{name}"}
    )
    try:
        await connection.connect()
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(connection.close()), CLOSE_TIMEOUT_S)
        raise
    return connection


def with_heartbeat(url: str, heartbeat_s: int) -> URL:
    """The URL with our heartbeat unless it sets one: a dead link is noticed in about 2x it."""
    parsed = make_url(url)
    if "heartbeat" in parsed.query:
        return parsed
    return parsed.update_query(heartbeat=str(heartbeat_s))


async def broker_answers(url: str, timeout_s: float = 3.0) -> bool:
    """True when a broker accepts a connection at `url`."""
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), timeout_s)
    except Exception:  # any failure means: not this broker
        return False
    await connection.close()
    return True


def broker_config_error(exc: BaseException, url: str) -> ConfigError | None:
    """A broker refusal no retry can cure (credentials, virtual host), as a ConfigError."""
    parsed = make_url(url)
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return ConfigError(
            f"DIALER_AMQP_URL: the broker at {parsed.host}:{parsed.port} refused user "
            f"'{parsed.user}' (wrong user name or password)"
        )
    text = str(exc)
    # The broker closes the connection at Connection.Open for an unknown or forbidden vhost;
    # aiormq reports only the unexpected frame.
    if isinstance(exc, aiormq.exceptions.ProtocolSyntaxError) and "Connection.OpenOk" in text:
        vhost = parsed.path[1:] or "/"
        return ConfigError(
            f"DIALER_AMQP_URL: the broker at {parsed.host}:{parsed.port} has no virtual host "
            f"'{vhost}' that user '{parsed.user}' may use (create it, or fix the URL's path)"
        )
    return None


async def cli_connect(
    settings: Settings, *, robust: bool = False, timeout_s: float = 10.0
) -> AbstractConnection:
    """A connection for a CLI command (robust: it outlives broker restarts); a refusal or an
    absent broker is one clear error."""
    url = settings.amqp_url.get_secret_value()
    opener = aio_pika.connect_robust if robust else aio_pika.connect
    try:
        return await asyncio.wait_for(opener(url), timeout_s)
    except BROKER_ERRORS as exc:
        problem = broker_config_error(exc, url)
        if problem is not None:
            raise problem from exc
        parsed = make_url(url)
        raise ServiceUnreachableError(
            f"DIALER_AMQP_URL: no broker answers at {parsed.host}:{parsed.port} "
            f"({type(exc).__name__}: {exc or 'timed out'})"
        ) from exc


def cli_settings(args: argparse.Namespace) -> Settings:
    """Settings from DIALER_* variables, with the command's --prefix and --amqp-url on top."""
    overrides = {
        name: getattr(args, name)
        for name in ("prefix", "amqp_url")
        if getattr(args, name, None) is not None
    }
    return load_settings(**overrides)


def persistent_copy(
    message: AbstractIncomingMessage, headers: dict[str, Any], *, priority: int | None = None
) -> aio_pika.Message:
    """A persistent copy of a delivery under new headers: same body, ids and properties.

    Expiration and user_id are not copied: a copy must neither expire nor be refused for
    a user the publisher authenticated as.
    """
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
