"""`RequestConsumer`: requests from the broker into the ledger, acked only after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from consumers.actions import (
    BROKER_TIMEOUT_S,
    STORE_ERRORS,
    Accept,
    Actions,
    Item,
    StopBatches,
    StopCanceled,
    delivery_of,
)
from consumers.decode import plan, unprocessable
from service.backoff import Backoff
from service.bus.connection import BROKER_ERRORS, Names, connect
from service.bus.topology import declare
from service.clock import Clock, utcnow
from service.ledger import Ledger
from service.metrics import Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)
INLINE_PLAN_BYTES = 64 * 1024


class RequestConsumer:
    """Consumes `{prefix}.requests`: decode, validate, write to the ledger, then ack."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        accept: Accept | None = None,
        stop_canceled: StopCanceled | None = None,
        stop_batches: StopBatches | None = None,
        wake: Callable[[], None] | None = None,
        clock: Clock = utcnow,
        batch_max: int = 128,
        batch_window_s: float = 0.005,
        store_retry_max_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self._accept = accept
        self._stop_canceled = stop_canceled
        self._stop_batches = stop_batches
        self._wake = wake
        self.actions: Actions | None = None  # made at start, with the dead-letter exchange
        self.batch_max = max(1, min(batch_max, settings.prefetch))
        self.batch_window_s = batch_window_s
        self.store_retry_max_s = store_retry_max_s
        self.names = Names(settings.prefix)
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self._stopping = False
        self.ledger_retries = 0  # ledger pings that failed while paused: how long it held

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Consuming, connected, and not paused for the database."""
        connection = self._connection
        return (
            self._consumer_tag is not None
            and not self._paused
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
        )

    @property
    def paused(self) -> bool:
        """True while waiting for the ledger to come back."""
        return self._paused

    async def start(self) -> None:
        """Connect, declare the topology, and start consuming (again after a failed start)."""
        self._stopping = False
        self._inbox = asyncio.Queue()
        self._connection = await connect(self.settings, "requests")
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.settings.prefetch)  # per consumer (quorum)
        topology = await declare(channel, self.settings)
        self._queue = topology.requests_queue
        dead_channel: AbstractChannel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self.actions = Actions(
            self.ledger,
            self.metrics,
            self.clock,
            await dead_channel.get_exchange(self.names.dead, ensure=False),
            delivery_limit=self.settings.delivery_limit,
            accept=self._accept,
            stop_canceled=self._stop_canceled,
            stop_batches=self._stop_batches,
            wake=self._wake,
        )
        self._worker = asyncio.create_task(self._run(), name="request-consumer")
        await self._consume()

    async def stop(self, grace_s: float) -> None:
        """Stop taking deliveries, finish and ack what is in hand, then disconnect."""
        self._stopping = True
        await self._cancel_consumer()
        self._inbox.put_nowait(None)
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout=grace_s)
            except TimeoutError:
                log.warning("consumer_drain_timeout", grace_s=grace_s)
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
        if self.actions is not None and self.actions.stop_tasks:
            await asyncio.wait(self.actions.stop_tasks, timeout=max(1.0, grace_s / 4))
        if self._connection is not None:
            await self._connection.close()

    async def _consume(self) -> None:
        if self._queue is None:
            raise RuntimeError("RequestConsumer.start() was not called")
        self._consumer_tag = await self._queue.consume(
            self._on_message, no_ack=False, timeout=BROKER_TIMEOUT_S
        )

    async def _resume(self) -> None:
        """Consume again; a consumer that failed to start is not restored by reconnection."""
        retry = Backoff(0.1, self.store_retry_max_s)
        while not self._stopping and self._consumer_tag is None:
            try:
                await self._consume()
            except BROKER_ERRORS as exc:
                log.warning("consumer_resume_failed", error=str(exc))
                await asyncio.sleep(retry.next_s())

    async def _cancel_consumer(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None and self._queue is not None:
            try:
                await self._queue.cancel(tag, timeout=BROKER_TIMEOUT_S)
            except BROKER_ERRORS as exc:
                log.warning("consumer_cancel_failed", error=str(exc))

    async def ping(self) -> None:
        """A round trip to the broker on the consuming channel (never time it out: a
        cancelled RPC makes aiormq close the channel)."""
        if self._queue is None:
            raise RuntimeError("not consuming")
        # The underlying channel: aio-pika answers a passive declare of a queue it knows from
        # its cache, without asking the broker.
        channel = await self._queue.channel.get_underlay_channel()
        await channel.queue_declare(self.names.requests, passive=True)

    def _actions(self) -> Actions:
        if self.actions is None:
            raise RuntimeError("RequestConsumer.start() was not called")
        return self.actions

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    # ------------------------------------------------------------ batching

    async def _run(self) -> None:
        while True:
            batch, last = await self._next_batch()
            try:
                await self._handle(batch)
            except Exception:  # a bug must not kill the worker and strand the prefetch window
                log.exception("request_batch_failed", size=len(batch))
                for item in batch:
                    if not item.settled:
                        await self._actions().requeue(item)
            if last:
                return

    async def _next_batch(self) -> tuple[list[Item], bool]:
        """Up to batch_max deliveries, or what arrives within batch_window_s of the first."""
        first = await self._inbox.get()
        if first is None:
            return [], True
        batch: list[Item] = []
        await self._add(batch, first)
        deadline = time.monotonic() + self.batch_window_s
        while len(batch) < self.batch_max:
            remaining = deadline - time.monotonic()
            try:
                message = (
                    self._inbox.get_nowait()
                    if not self._inbox.empty() or remaining <= 0
                    else await asyncio.wait_for(self._inbox.get(), remaining)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if message is None:
                return batch, True
            await self._add(batch, message)
        return batch, False

    async def _add(self, batch: list[Item], message: AbstractIncomingMessage) -> None:
        delivery = delivery_of(message)
        planner = functools.partial(
            plan,
            delivery,
            self.settings.max_body_bytes,
            replace_webhook=self.settings.webhook_url is not None,
            default_dispatch=self.settings.batch_dispatch,
        )
        try:
            # A big batch takes a while to validate: off the loop, so webhooks, dials and
            # events go on meanwhile.
            big = len(delivery.body) > INLINE_PLAN_BYTES
            decided = await asyncio.to_thread(planner) if big else planner()
        except Exception as exc:  # a bug of ours on this input: keep it, reason attached
            log.exception("request_plan_failed", message_id=delivery.message_id)
            decided = unprocessable(delivery, exc)
        batch.append(Item(message, decided))

    async def _handle(self, batch: list[Item]) -> None:
        """Process a batch; while the ledger is down, hold the rest unacked and retry."""
        pending = deque(batch)  # empty after a sentinel or when every message was poison
        while pending:
            try:
                await self._actions().run(pending)
            except STORE_ERRORS as exc:
                if not await self._pause(exc):
                    return  # stopping: the held deliveries return to the queue on close

    # ------------------------------------------------------------ database outage

    async def _pause(self, exc: BaseException) -> bool:
        """Hold the deliveries in hand until the ledger answers; False if stopping meanwhile."""
        # A requeue or a closed channel counts toward the quorum delivery limit on 3.10
        # (field-notes 1.5), so nothing is given back: consuming stops and the deliveries
        # stay unacked. The broker's consumer_timeout (30 min) bounds how long that holds.
        log.warning("ledger_unavailable_pausing", error=str(exc))
        self._paused = True
        await self._cancel_consumer()
        retry = Backoff(0.1, self.store_retry_max_s)
        try:
            while not self._stopping:
                await asyncio.sleep(retry.next_s())
                try:
                    await self.ledger.ping()
                except STORE_ERRORS:
                    self.ledger_retries += 1
                    continue
                log.info("ledger_back_resuming")
                await self._resume()
                return True
            return False
        finally:
            self._paused = False
