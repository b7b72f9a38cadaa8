"""What happens to each planned delivery: ledger write, dead letter, ack, log line, metric."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from sqlalchemy.exc import InterfaceError, OperationalError

from consumers.decode import Cancel, Create, Delivery, Plan, Reject
from schemas.envelope import REQUEST_KINDS
from service.amqp import BROKER_ERRORS, persistent_copy
from service.errors import StoreUnavailableError
from service.ledger import Ledger
from service.logs import mask_phone, mask_text
from service.metrics import Metrics

log = structlog.get_logger("consumers.requests")

StopCall = Callable[[str], Awaitable[object]]
# "The database is down": hold the delivery and pause, never ack or dead-letter it.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    OperationalError,
    InterfaceError,
)
BROKER_TIMEOUT_S = 10.0  # a black-holed link must not stall the worker until heartbeats notice
_HEADER_TEXT_MAX = 1000
_LIVE_STATES = frozenset({"dialing", "queued", "unknown"})  # a call Bland may be placing


@dataclass
class Item:
    """A delivery and what to do with it."""

    message: AbstractIncomingMessage
    plan: Plan
    received_s: float = field(default_factory=time.perf_counter)
    settled: bool = False  # acked or nacked: never touch the delivery again


def delivery_of(message: AbstractIncomingMessage) -> Delivery:
    """The broker-independent view of a delivery."""
    return Delivery(
        body=message.body,
        routing_key=message.routing_key or "",
        type=message.type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
    )


def dead_letter_message(
    message: AbstractIncomingMessage, *, reason: str, error: str, request_id: str
) -> aio_pika.Message:
    """A persistent copy of the delivery with the reason in headers (no expiration, no user_id)."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers.update(
        {
            "x-dialer-reason": reason,
            "x-dialer-error": mask_text(error)[:_HEADER_TEXT_MAX],
            "x-dialer-request-id": request_id,
            "x-dialer-routing-key": message.routing_key or "",
            "x-dialer-exchange": message.exchange or "",
        }
    )
    return persistent_copy(message, headers, priority=message.priority)


def _kind_label(kind: str) -> str:
    return kind if kind in REQUEST_KINDS else "other"


class Actions:
    """Runs planned deliveries in order; acks each right after its ledger commit."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        clock: Callable[[], datetime],
        stop_call: StopCall | None = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.stop_call = stop_call
        self.dead_exchange: AbstractExchange | None = None
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
        results = await self.ledger.accept_calls(calls, self.clock())
        for item, result in zip(group, results, strict=True):
            await self._done(item, "duplicate" if result.duplicate else "accepted")

    async def _one(self, item: Item) -> None:
        action = item.plan.action
        if isinstance(action, Reject):
            await self._reject(item, action)
        elif isinstance(action, Cancel):
            await self._cancel(item, action)

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
        if self.dead_exchange is None:
            raise RuntimeError("no dead-letter exchange: RequestConsumer.start() sets it")
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
        if live and result.call_id is not None and self.stop_call is not None:
            self._stop_at_bland(self.stop_call, result.request_id, result.call_id)
        await self._done(item, "canceled" if result.changed else f"cancel_{result.state}")

    def _stop_at_bland(self, stop_call: StopCall, request_id: str | None, call_id: str) -> None:
        async def stop() -> None:
            try:
                accepted = await stop_call(call_id)
            except Exception as exc:  # best effort: the reconciler retries (calls_to_stop)
                self.metrics.call_stops.labels("error").inc()
                log.warning("stop_call_failed", call_id=call_id, error=str(exc))
                return
            self.metrics.call_stops.labels("sent" if accepted is True else "refused").inc()
            try:
                if accepted is True and request_id is not None:
                    await self.ledger.mark_stop_sent(request_id, self.clock())
            except Exception as exc:  # the reconciler stops it again (calls_to_stop)
                log.warning("stop_call_failed", call_id=call_id, error=str(exc))

        task = asyncio.create_task(stop(), name=f"stop-call-{call_id}")
        self.stop_tasks.add(task)
        task.add_done_callback(self.stop_tasks.discard)

    async def _poison(self, item: Item) -> None:
        """A bug or an unexpected failure: requeue; the delivery limit dead-letters a poison one."""
        log.exception("request_failed", request_id=item.plan.request_id, kind=item.plan.kind)
        self.metrics.requests_consumed.labels(_kind_label(item.plan.kind), "error").inc()
        await self.requeue(item)

    async def _done(self, item: Item, outcome: str, **fields: Any) -> None:
        """Ack after the commit; the canonical log line and the metric."""
        item.settled = True
        try:
            await item.message.ack()
        except BROKER_ERRORS as exc:
            # The channel died since the delivery: the broker redelivers it; the ledger dedupes.
            log.info("ack_lost", request_id=item.plan.request_id, error=str(exc))
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
