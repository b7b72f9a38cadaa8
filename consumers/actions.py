"""What happens to each planned delivery: ledger write, dead letter, ack, log line, metric."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from sqlalchemy.exc import InterfaceError, OperationalError

from consumers.batches import CancelBatch, CreateBatch
from consumers.decode import Cancel, Create, Delivery, Dnc, Plan, Reject
from schemas.envelope import REQUEST_KINDS
from service.bus import guard
from service.bus.connection import BROKER_ERRORS
from service.bus.dead_letters import dead_letter_message
from service.clock import Clock
from service.errors import StoreUnavailableError
from service.ledger import Accepted, CallToStop, Ledger, NewCall
from service.ledger.do_not_call import DncSource
from service.logs import mask_phone
from service.metrics import Metrics

log = structlog.get_logger("consumers.requests")

# Stops the call of a canceled request at Bland (the outcomes stage's CallStops.stop).
StopCanceled = Callable[[CallToStop], Awaitable[object]]
# Stops Bland batches (`bland` dispatch) of a canceled batch request.
StopBatches = Callable[[Sequence[str]], Awaitable[object]]
# Writes new call requests: the ledger's accept_calls, or the dispatcher's accept-and-claim.
Accept = Callable[[Sequence[NewCall], datetime], Awaitable[list[Accepted]]]
# "The database is down": hold the delivery and pause, never ack or dead-letter it.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    OperationalError,
    InterfaceError,
)
BROKER_TIMEOUT_S = 10.0  # a black-holed link must not stall the worker until heartbeats notice
_LIVE_STATES = frozenset({"dialing", "queued", "unknown"})  # a call Bland may be placing


@dataclass
class Item:
    """A delivery and what to do with it."""

    message: AbstractIncomingMessage
    plan: Plan
    received_s: float = field(default_factory=time.perf_counter)
    settled: bool = False  # acked or nacked: never touch the delivery again


def delivery_of(message: AbstractIncomingMessage) -> Delivery:
    """The broker-independent view of a delivery; text the guard excused comes escaped."""
    return Delivery(
        body=message.body,
        routing_key=_text(message.routing_key) or "",
        type=_text(message.type),
        message_id=_text(message.message_id),
        correlation_id=_text(message.correlation_id),
        reply_to=_text(message.reply_to),
        content_type=_text(message.content_type),
        content_encoding=_text(message.content_encoding),
        property_problems=tuple(guard.problems(message)),
    )


def _text(value: str | None) -> str | None:
    return guard.printable(value) if value else value


def delivery_count(message: AbstractIncomingMessage) -> int:
    """Earlier deliveries of this message (quorum queues count them; missing means none)."""
    count = (message.headers or {}).get("x-delivery-count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _channel(message: AbstractIncomingMessage) -> object | None:
    """The channel a delivery came on; None once it is closed (its ack is lost anyway)."""
    try:
        return message.channel
    except BROKER_ERRORS:
        return None


def _kind_label(kind: str) -> str:
    return kind if kind in REQUEST_KINDS else "other"


class Actions:
    """Runs planned deliveries in order; acks each right after its ledger commit."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        clock: Clock,
        dead_exchange: AbstractExchange,
        *,
        delivery_limit: int,
        accept: Accept | None = None,
        stop_canceled: StopCanceled | None = None,
        stop_batches: StopBatches | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.stop_batches = stop_batches
        self.wake = wake
        self.metrics = metrics
        self.clock = clock
        self.dead_exchange = dead_exchange
        self.delivery_limit = delivery_limit
        self.accept = accept or ledger.accept_calls
        self.stop_canceled = stop_canceled
        self.stop_tasks: set[asyncio.Task[None]] = set()

    async def requeue(self, item: Item) -> None:
        """Give the delivery back (counts toward the delivery limit)."""
        item.settled = True
        with contextlib.suppress(*BROKER_ERRORS):
            await item.message.nack(requeue=True)

    async def run(self, pending: deque[Item]) -> None:
        """Run the items in order (consecutive creates in one transaction); pop each once settled.

        STORE_ERRORS propagate, with the unsettled items still in `pending`.
        """
        while pending:
            group = [pending[0]]
            if isinstance(pending[0].plan.action, Create):
                for item in list(pending)[1:]:
                    if not isinstance(item.plan.action, Create):
                        break
                    group.append(item)
            try:
                await self._run_group(group)
            finally:
                while pending and pending[0].settled:
                    pending.popleft()

    async def _run_group(self, group: list[Item]) -> None:
        try:
            if isinstance(group[0].plan.action, Create):
                await self._create(group)
            else:
                await self._one(group[0])
        except STORE_ERRORS:
            raise
        except Exception:
            if len(group) > 1:  # find the poison one; the others go through
                # Skip what was already acked: a second ack closes the channel.
                for item in group:
                    if not item.settled:
                        await self._run_group([item])
                return
            await self._poison(group[0])

    async def _create(self, group: list[Item]) -> None:
        calls = [item.plan.action.call for item in group if isinstance(item.plan.action, Create)]
        results = await self.accept(calls, self.clock())
        await self._ack_all(group)
        for item, result in zip(group, results, strict=True):
            self._note(item, "duplicate" if result.duplicate else "accepted")

    async def _one(self, item: Item) -> None:
        action = item.plan.action
        if isinstance(action, Reject):
            await self._reject(item, action)
        elif isinstance(action, Cancel):
            await self._cancel(item, action)
        elif isinstance(action, Dnc):
            await self._dnc(item, action)
        elif isinstance(action, CreateBatch):
            await self._create_batch(item, action)
        elif isinstance(action, CancelBatch):
            await self._cancel_batch(item, action)

    async def _dnc(self, item: Item, action: Dnc) -> None:
        p = item.plan
        request = DncSource(p.request_id, p.correlation_id, p.reply_to)
        if action.add:
            changed = await self.ledger.dnc_add(
                action.phone_number, reason=action.reason, now=self.clock(), request=request
            )
        else:
            changed = await self.ledger.dnc_remove(
                action.phone_number, now=self.clock(), request=request
            )
        await self._done(item, "dnc_updated" if changed else "dnc_unchanged")

    async def _create_batch(self, item: Item, action: CreateBatch) -> None:
        result = await self.ledger.accept_batch(action.batch, self.clock())
        if self.wake is not None:
            self.wake()
        outcome = "duplicate" if result.duplicate else "accepted"
        await self._done(item, outcome, recipients=result.recipients, rejected=result.rejected)

    async def _cancel_batch(self, item: Item, action: CancelBatch) -> None:
        result = await self.ledger.cancel_batch(
            batch_request_id=action.request_id,
            bland_batch_id=action.bland_batch_id,
            now=self.clock(),
        )
        if not result.found:
            target = action.request_id or action.bland_batch_id
            field_name = "request_id" if action.request_id else "batch_id"
            error = f"No batch found for {field_name} {target}."
            await self._reject(item, Reject("invalid_request", [error], False))
            return
        for call in result.to_stop:
            self._stop_at_bland(call)
        if result.bland_batch_ids and self.stop_batches is not None:
            self._background(self.stop_batches(result.bland_batch_ids), "stop-batches")
        await self._done(item, "canceled", canceled=result.canceled)

    async def _reject(self, item: Item, action: Reject) -> None:
        p = item.plan
        await self.ledger.record_rejection(
            request_id=p.request_id,
            kind=p.kind[:64],
            correlation_id=p.correlation_id,
            reply_to=p.reply_to,
            reason=action.reason,
            errors=action.errors,
            now=self.clock(),
        )
        if not action.dead_letter:
            await self._done(item, "rejected", reason=action.reason, errors=action.errors)
            return
        try:
            await self._dead_letter(item, action.reason, "; ".join(action.errors))
        except BROKER_ERRORS as exc:
            # Not acked: it comes back (delivery-limit bounds the loop, then the broker's DLX).
            log.warning("dead_letter_failed", request_id=p.request_id, error=str(exc))
            await self.requeue(item)
            return
        await self._done(item, "dead_lettered", reason=action.reason)

    async def _dead_letter(self, item: Item, reason: str, error: str) -> None:
        copy = dead_letter_message(
            item.message, reason=reason, error=error, request_id=item.plan.request_id
        )
        await self.dead_exchange.publish(
            copy,
            routing_key=item.message.routing_key or "",
            mandatory=True,
            timeout=BROKER_TIMEOUT_S,
        )
        self.metrics.dead_letters.labels(reason).inc()

    async def _cancel(self, item: Item, action: Cancel) -> None:
        p = item.plan
        result = await self.ledger.cancel(
            request_id=action.request_id,
            call_id=action.call_id,
            correlation_id=p.correlation_id,
            reply_to=p.reply_to,
            now=self.clock(),
        )
        if not result.found:
            target = action.request_id or action.call_id
            field_name = "request_id" if action.request_id else "call_id"
            reject = Reject("invalid_request", [f"No call found for {field_name} {target}."], False)
            await self._reject(item, reject)
            return
        live = result.state in _LIVE_STATES and not result.changed
        if live and result.call_id is not None and result.request_id is not None:
            self._stop_at_bland(CallToStop(result.request_id, result.call_id, self.clock()))
        await self._done(item, "canceled" if result.changed else f"cancel_{result.state}")

    def _stop_at_bland(self, call: CallToStop) -> None:
        """Stop the call in the background; the outcomes stage's sweep retries a failed stop."""
        if self.stop_canceled is None:
            return
        task = asyncio.create_task(
            self._stop(self.stop_canceled, call), name=f"stop-{call.call_id}"
        )
        self.stop_tasks.add(task)
        task.add_done_callback(self.stop_tasks.discard)

    def _background(self, work: Awaitable[object], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # best effort; the batch round stops what is left
                log.warning("background_failed", task=name, error=str(exc))

        task = asyncio.create_task(run(), name=name)
        self.stop_tasks.add(task)
        task.add_done_callback(self.stop_tasks.discard)

    @staticmethod
    async def _stop(stop: StopCanceled, call: CallToStop) -> None:
        try:
            await stop(call)
        except Exception as exc:  # best effort here: calls_to_stop keeps it owed
            log.warning("stop_call_failed", request_id=call.request_id, error=str(exc))

    async def _poison(self, item: Item) -> None:
        """A bug or an unexpected failure: requeue (it may pass next time); on its last
        delivery, dead-letter it ourselves with the reason rather than let the broker drop
        it there without one."""
        log.exception("request_failed", request_id=item.plan.request_id, kind=item.plan.kind)
        self.metrics.requests_consumed.labels(_kind_label(item.plan.kind), "error").inc()
        if delivery_count(item.message) + 1 < self.delivery_limit:
            await self.requeue(item)
            return
        error = "it failed on every delivery; see the service's log for this request id"
        try:
            await self._dead_letter(item, "unprocessable", error)
        except BROKER_ERRORS as exc:
            log.warning("dead_letter_failed", request_id=item.plan.request_id, error=str(exc))
            await self.requeue(item)
            return
        await self._done(item, "dead_lettered", reason="unprocessable")

    async def _done(self, item: Item, outcome: str, **fields: Any) -> None:
        """Ack after the commit; the canonical log line and the metric."""
        await self._ack_all([item])
        self._note(item, outcome, **fields)

    async def _ack_all(self, items: list[Item]) -> None:
        """Ack deliveries in delivery order, all with one `multiple` ack when one channel
        carried them: every earlier delivery of the channel is settled already (the worker
        takes deliveries in order), so the multiple ack covers exactly these."""
        channels = {id(_channel(item.message)) for item in items}
        one_channel = len(channels) == 1 and id(None) not in channels
        targets = [items[-1]] if one_channel else items
        for item in items:
            item.settled = True
        for item in targets:
            try:
                await item.message.ack(multiple=one_channel and len(items) > 1)
            except BROKER_ERRORS as exc:
                # The channel died since the delivery: the broker redelivers; the ledger dedupes.
                log.info("ack_lost", request_id=item.plan.request_id, error=str(exc))

    def _note(self, item: Item, outcome: str, **fields: Any) -> None:
        """The canonical log line and the metric of a settled delivery."""
        p = item.plan
        self.metrics.requests_consumed.labels(_kind_label(p.kind), outcome).inc()
        with structlog.contextvars.bound_contextvars(request_id=p.request_id, kind=p.kind):
            log.info(
                "request",
                outcome=outcome,
                correlation_id=p.correlation_id,
                phone=mask_phone(p.phone_number) if p.phone_number else None,
                redelivered=item.message.redelivered,
                delivery_count=(item.message.headers or {}).get("x-delivery-count"),
                duration_ms=round((time.perf_counter() - item.received_s) * 1000, 2),
                **fields,
            )
