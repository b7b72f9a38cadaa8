"""`Dispatcher`: claim due requests in the ledger, POST them to Bland, record what happened."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from service.backoff import Uniform, ceiling_s, full_jitter_s, retry_delay_s
from service.bland import BlandClient
from service.errors import (
    AccountError,
    DialerError,
    PermanentError,
    StoreUnavailableError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)
from service.ledger import CallToStop, Claim, Ledger
from service.logs import mask_phone
from service.loop import sleep_until
from service.metrics import Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)

REQUEST_ID_KEY = "dialer_request_id"
RECORD_RETRY_FIRST_S = 0.2
RECORD_RETRY_MAX_S = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def stop_canceled(
    ledger: Ledger, bland: BlandClient, call: CallToStop, now: datetime, *, metrics: Metrics
) -> str:
    """Ask Bland to stop a canceled request's call: stop_sent (recorded) or stop_retry.

    Only Bland's acceptance is recorded: a refusal ("SID not found" for a call still being
    set up) or a failure leaves the call in `calls_to_stop` until its outcome settles it.
    """
    try:
        accepted = await bland.stop_call(call.call_id)
    except DialerError as exc:
        metrics.call_stops.labels("error").inc()
        log.warning("stop_call_failed", request_id=call.request_id, error=str(exc))
        return "stop_retry"
    metrics.call_stops.labels("sent" if accepted else "refused").inc()
    if not accepted:
        log.info("stop_call_refused", request_id=call.request_id, call_id=call.call_id)
        return "stop_retry"
    await ledger.mark_stop_sent(call.request_id, now)
    log.info("canceled_call_stopped", request_id=call.request_id, call_id=call.call_id)
    return "stop_sent"


def default_owner() -> str:
    """A claim owner unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def call_body(claim: Claim, webhook_url: str | None) -> dict[str, Any]:
    """The body to POST: the request's, with our request id in `metadata` and our webhook.

    The publisher's metadata keys are kept; ours wins on a clash because reconciliation
    matches on it. Without our webhook URL the publisher's own goes to Bland unchanged.
    """
    body = dict(claim.body)
    metadata = body.get("metadata")
    merged = dict(metadata) if isinstance(metadata, Mapping) else {}
    merged[REQUEST_ID_KEY] = claim.request_id
    body["metadata"] = merged
    if webhook_url is not None:
        body["webhook"] = webhook_url
    elif claim.publisher_webhook is not None and "webhook" not in body:
        body["webhook"] = claim.publisher_webhook
    return body


class Dispatcher:
    """The dial loop: claim (attempt committed first) → POST → record; never dials twice."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        owner: str | None = None,
        draw: Uniform = random.random,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self.owner = owner or default_owner()
        self.draw = draw
        self.problem: str | None = None  # set while Bland refuses our account
        self.failures = 0  # consecutive rounds the ledger failed
        self._setbacks = 0  # consecutive dials that failed for a reason not about the request
        self._hold_until = 0.0  # monotonic time before which nothing is claimed
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[str]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """False while Bland refuses our account or the ledger cannot be read."""
        return self.problem is None and self.failures == 0

    @property
    def in_flight(self) -> int:
        """POSTs to Bland not answered yet."""
        return len(self._inflight)

    def wake(self) -> None:
        """Look for due requests now (the consumer accepted some)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the dial loop."""
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let POSTs in flight finish within grace_s.

        A POST still unanswered at the deadline is abandoned: its row stays `dialing` and the
        reconciler's sweep turns it into `unknown` later; it is never dialed again.
        """
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if not self._inflight:
            return
        _, pending = await asyncio.wait(self._inflight, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("dispatcher_stopped_with_calls_in_flight", abandoned=len(pending))
            await asyncio.wait(pending)

    async def join(self) -> None:
        """Wait until every POST in flight is answered and recorded."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed, full = await self.run_once()
            except Exception as exc:  # fail closed: nobody is dialed while the ledger is down
                self.failures += 1
                log.warning("dispatch_round_failed", error=str(exc), failures=self.failures)
                await self._idle(min(5.0, 0.2 * 2 ** min(self.failures, 5)))
                continue
            self.failures = 0
            if not full:
                await self._idle(self.settings.dispatch_idle_s)
            elif claimed == 0:
                await self._room()

    async def _idle(self, seconds: float) -> None:
        hold_s = self._hold_until - time.monotonic()
        await sleep_until(self._wake, max(seconds, hold_s))
        self._wake.clear()

    async def _room(self) -> None:
        """Every connection is busy: wait for one POST to finish (or stop)."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*self._inflight, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def run_once(self) -> tuple[int, bool]:
        """Claim one round and start its POSTs; (claimed, whether more may be due right now)."""
        if time.monotonic() < self._hold_until:
            return 0, False
        room = self.settings.bland_pool_size - len(self._inflight)
        if room <= 0:
            return 0, True
        limit = min(self.settings.dispatch_batch_size, room)
        claims, admission = await self.ledger.claim_due_with_admission(
            owner=self.owner,
            now=self.clock(),
            limit=limit,
            max_concurrent=self.settings.max_concurrent_calls,
            max_per_second=self.settings.max_calls_per_second,
            slot_lease_s=self.settings.slot_lease_s,
        )
        if admission.limited_by is not None:
            self.metrics.limit_waits.labels(admission.limited_by).inc()
        self.submit(claims)
        return len(claims), len(claims) == limit and admission.limited_by is None

    def submit(self, claims: Sequence[Claim]) -> None:
        """Start the POSTs of claims (also those taken by the consumer's accept_and_claim)."""
        for claim in claims:
            task = asyncio.create_task(self.dial(claim), name=f"dial-{claim.request_id}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def dial(self, claim: Claim) -> str:
        """POST one claimed request and record the result; returns the `calls_dialed` label."""
        outcome: str | Exception
        try:
            outcome = await self.bland.create_call(call_body(claim, self.settings.webhook_url))
        except Exception as exc:  # every failure is classified and recorded below
            outcome = exc
        try:
            result = await self._record(claim, outcome)
        except Exception:  # the row stays dialing; the sweep makes it unknown (an orphan)
            log.exception("dial_result_not_recorded", request_id=claim.request_id)
            result = "unrecorded"
        self.metrics.calls_dialed.labels(result).inc()
        log.info(
            "call_dialed",
            result=result,
            request_id=claim.request_id,
            attempt=claim.attempt_no,
            phone=mask_phone(claim.phone_number),
        )
        return result

    async def _record(self, claim: Claim, outcome: str | Exception) -> str:
        """Record what the POST did, trying again for a while when the ledger is down.

        A result left unrecorded keeps the row `dialing`: the sweep then takes it for an
        orphan, and an orphan that Bland does not list may be dialed again.
        """
        delay_s = RECORD_RETRY_FIRST_S
        deadline = time.monotonic() + self.settings.reconcile_grace_s / 2
        while True:
            try:
                if isinstance(outcome, str):
                    return await self._record_queued(claim, outcome)
                return await self._record_failure(claim, outcome)
            except StoreUnavailableError as exc:
                if time.monotonic() + delay_s > deadline:
                    raise
                log.warning("dial_result_record_retry", request_id=claim.request_id, error=str(exc))
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECORD_RETRY_MAX_S)

    async def _record_queued(self, claim: Claim, call_id: str) -> str:
        self._setbacks = 0
        self.problem = None
        queued = await self.ledger.record_queued(claim, call_id, self.clock())
        if not queued:
            # The row moved on without us (e.g. a webhook settled it first); nothing to redo.
            log.warning("queued_claim_stale", request_id=claim.request_id, call_id=call_id)
        if queued.stop is not None:
            await self._stop_canceled(queued.stop)
        return "queued"

    async def _stop_canceled(self, call: CallToStop) -> None:
        """Canceled while the POST was in flight: stop the call now.

        The cancel is durable in the ledger: if this fails, or the process dies first, the
        reconciler's round stops the call (calls_to_stop).
        """
        try:
            await stop_canceled(self.ledger, self.bland, call, self.clock(), metrics=self.metrics)
        except Exception as exc:  # the call was recorded; the reconciler retries the stop
            log.warning("stop_after_cancel_deferred", request_id=call.request_id, error=str(exc))

    async def _record_failure(self, claim: Claim, exc: Exception) -> str:
        now = self.clock()
        if isinstance(exc, PermanentError):
            await self.ledger.record_dial_failed(
                claim, http_status=exc.http_status, message=str(exc), errors=exc.errors, now=now
            )
            return "failed"
        if isinstance(exc, AccountError):
            pause_s = self._setback(jitter=False)
            self.problem = f"Bland refused our account (HTTP {exc.http_status}): {exc}"
            log.error("bland_account_refused", problem=self.problem, paused_s=round(pause_s, 1))
            await self._retry(claim, now, pause_s, throttled=True, error=str(exc))
            return "account_error"
        if isinstance(exc, ThrottledError):
            return await self._throttled(claim, exc, now)
        if isinstance(exc, TransientError):
            self._setback()
            delay_s = self._delay_s(claim.attempt_no)
            await self._retry(claim, now, delay_s, throttled=False, error=str(exc))
            return "transient"
        if not isinstance(exc, UnknownOutcomeError):
            log.exception("dial_failed_unexpectedly", request_id=claim.request_id)
        self._setback()
        await self.ledger.record_unknown(claim, error=_text(exc), now=now)
        return "unknown"

    async def _throttled(self, claim: Claim, exc: ThrottledError, now: datetime) -> str:
        self.metrics.limit_waits.labels("bland_429").inc()
        if exc.retry_after_s is None:  # account-wide: slow every dial down, not just this one
            self._setback()
        delay_s = self._delay_s(claim.attempt_no, at_least_s=exc.retry_after_s)
        await self._retry(claim, now, delay_s, throttled=True, error=str(exc))
        return "throttled"

    async def _retry(
        self, claim: Claim, now: datetime, delay_s: float, *, throttled: bool, error: str
    ) -> None:
        await self.ledger.record_retry(
            claim,
            not_before=now + timedelta(seconds=delay_s),
            throttled=throttled,
            error=error,
            now=now,
            max_transient_retries=self.settings.max_transient_retries,
        )

    def _delay_s(self, attempt: int, at_least_s: float | None = None) -> float:
        return retry_delay_s(
            attempt,
            self.settings.retry_backoff_base_s,
            self.settings.retry_backoff_max_s,
            at_least_s=at_least_s,
            draw=self.draw,
        )

    def _setback(self, *, jitter: bool = True) -> float:
        """One more failure not about the request itself: hold every claim for a while."""
        self._setbacks += 1
        base_s, cap_s = self.settings.retry_backoff_base_s, self.settings.retry_backoff_max_s
        hold_s = (
            full_jitter_s(self._setbacks, base_s, cap_s, self.draw)
            if jitter
            else ceiling_s(self._setbacks, base_s, cap_s)
        )
        self._hold_until = max(self._hold_until, time.monotonic() + hold_s)
        return hold_s


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
