"""`OutboxRelay`: outbox rows onto `{prefix}.events` (and `reply_to`), confirmed, then marked sent."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from schemas.events import SCHEMA_VERSION
from service.backoff import Backoff
from service.bus.connection import APP_ID, BROKER_ERRORS, Names, connect
from service.bus.topology import declare
from service.clock import Clock, utcnow
from service.ledger import Ledger, OutboxRow
from service.metrics import Metrics
from service.periodic import finish, sleep_until
from service.settings import Settings

log = structlog.get_logger(__name__)

_GAUGE_REFRESH_S = 1.0


def event_message(row: OutboxRow) -> aio_pika.Message:
    """The AMQP message of an outbox row: id, type, correlation and schema version in properties."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return aio_pika.Message(
        row.body.encode(),
        message_id=row.event_id,
        type=row.event_type,
        correlation_id=row.correlation_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=created,
        app_id=APP_ID,
        headers={"request_id": row.request_id, "schema_version": SCHEMA_VERSION},
    )


class OutboxRelay:
    """Publishes pending outbox rows with publisher confirms, mandatory, and returns raised."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        amqp_url: str | None = None,
        confirm_timeout_s: float = 10.0,
        lease_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.amqp_url = amqp_url
        self.confirm_timeout_s = confirm_timeout_s
        # Several replicas share a PostgreSQL outbox: rows are leased so each is normally
        # published once. A failed row waits for its lease to run out before it is retried.
        self.lease_s = lease_s if lease_s is not None else confirm_timeout_s + 5.0
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._default: AbstractExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._gauge_at = 0.0
        self._retry = Backoff(0.2, 5.0)

    @property
    def failures(self) -> int:
        """Rounds that failed in a row."""
        return self._retry.failures

    @property
    def ready(self) -> bool:
        """Connected and the last round did not fail."""
        connection = self._connection
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and self.failures == 0
        )

    async def ping(self) -> None:
        """A round trip to the broker on the publishing channel (never time it out: a
        cancelled RPC makes aiormq close the channel)."""
        if self._channel is None:
            raise RuntimeError("not started")
        # The underlying channel: aio-pika may answer a passive declare from its cache.
        channel = await self._channel.get_underlay_channel()
        await channel.exchange_declare(Names(self.settings.prefix).events, passive=True)

    async def start(self) -> None:
        """Connect (robust), declare the topology, and start the publishing loop."""
        self._stopping.clear()
        self._connection = await connect(self.settings, "relay", url=self.amqp_url)
        # aio-pika's default on_return_raises=False would turn an unroutable event into a
        # silent success (field-notes 1.3); with it on, the broker's return raises PublishError.
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        self._events = (await declare(channel, self.settings)).events_exchange
        self._default = channel.default_exchange
        self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    def wake(self) -> None:
        """Events were committed: publish now rather than at the next poll."""
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Finish the round in progress (within grace_s), then disconnect."""
        self._stopping.set()
        self._wake.set()
        await finish(self._task, grace_s)
        if self._connection is not None:
            await self._connection.close()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # a wake from here on (events committed meanwhile) is kept
            try:
                sent, failed = await self.run_once()
            except Exception as exc:  # the ledger or the broker is down: back off, try again
                log.warning("relay_round_failed", error=str(exc), failures=self.failures + 1)
                sent, failed = 0, 1
            if failed:
                await sleep_until(self._stopping, self._retry.next_s())
                continue
            if sent:  # an empty round proves nothing (failed rows may be leased away)
                self._retry.reset()
            else:
                await sleep_until(self._wake, self.settings.outbox_idle_s)

    async def run_once(self) -> tuple[int, int]:
        """Publish one batch of pending rows, all in flight at once; return (sent, failed)."""
        rows = await self._pending()
        if not rows:
            self.metrics.outbox_pending.set(0)
            return 0, 0
        results = await asyncio.gather(*(self._publish(row) for row in rows))
        sent = [row for row, ok in zip(rows, results, strict=True) if ok]
        await self.ledger.mark_sent([row.id for row in sent], self.clock())
        for row in sent:
            self.metrics.events_published.labels(row.event_type).inc()
        await self._update_gauge(len(rows), len(sent))
        return len(sent), len(rows) - len(sent)

    async def _pending(self) -> list[OutboxRow]:
        limit = self.settings.outbox_batch_size
        if self.ledger.is_sqlite:  # one replica by design: nothing to share
            return await self.ledger.pending_outbox(limit)
        return await self.ledger.pending_outbox(
            limit, owner=self.owner, now=self.clock(), lease_s=self.lease_s
        )

    async def _publish(self, row: OutboxRow) -> bool:
        """True once the broker confirmed the event (and its reply); False to retry later."""
        if self._events is None or self._default is None:
            raise RuntimeError("OutboxRelay.start() was not called")
        message = event_message(row)
        try:
            await self._send(self._events, message, row.event_type, row, target="events")
            if row.reply_to:
                await self._send(self._default, message, row.reply_to, row, target="reply_to")
        except BROKER_ERRORS as exc:
            log.info("event_not_confirmed", event_id=row.event_id, error=repr(exc))
            return False
        return True

    async def _send(
        self,
        exchange: AbstractExchange,
        message: aio_pika.Message,
        routing_key: str,
        row: OutboxRow,
        *,
        target: str,
    ) -> None:
        """Publish and wait for the confirm; an unroutable message is counted, not retried."""
        try:
            await exchange.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self.confirm_timeout_s
            )
        except aio_pika.exceptions.PublishError:
            # Confirmed but returned: nobody subscribed (events) or the reply queue is gone.
            # Retrying cannot help, and holding the row would block every later event.
            self.metrics.events_unroutable.labels(target).inc()
            level = log.debug if target == "events" else log.warning
            level(
                "event_unroutable",
                target=target,
                event_type=row.event_type,
                event_id=row.event_id,
                request_id=row.request_id,
            )

    async def _update_gauge(self, fetched: int, sent: int) -> None:
        if fetched < self.settings.outbox_batch_size:
            self.metrics.outbox_pending.set(fetched - sent)
            return
        now_s = time.monotonic()
        if now_s - self._gauge_at >= _GAUGE_REFRESH_S:
            self._gauge_at = now_s
            counts = await self.ledger.counts(self.clock())
            self.metrics.outbox_pending.set(counts.outbox_pending)
