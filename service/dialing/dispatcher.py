"""`Dispatcher`: claim due requests in the ledger, POST them to Bland, record what happened."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from service.backoff import Backoff, Uniform, ceiling_s
from service.bland.client import BlandClient
from service.bland.metadata import with_request_id
from service.clock import Clock, utcnow
from service.dialing.admission import admit, settings_limits
from service.dialing.batches import BatchSender, Coalescer
from service.dialing.compliance import rules_from, screen_round
from service.dialing.decisions import Decision, DialResult, RetryPolicy, decide, error_text
from service.dialing.recorder import QueuedRecorder
from service.errors import StoreUnavailableError, ThrottledError
from service.ledger import (
    Accepted,
    Admission,
    CallToStop,
    Claim,
    Ledger,
    Limits,
    NewCall,
    Outcome,
    OutcomeResult,
)
from service.ledger.records import Candidate, NumberFacts, Screened
from service.logs import mask_phone
from service.metrics import Metrics
from service.periodic import sleep_until
from service.settings import Settings

log = structlog.get_logger(__name__)

# Stops the call of a request canceled while its POST was in flight (the outcomes stage's).
StopCanceled = Callable[[CallToStop], Awaitable[object]]
ROUND_RETRY_MAX_S = 5.0
# All slots taken: a settled webhook wakes this process at once, so rounds can be rare; a slot
# freed otherwise (another replica's poll, a lease) is still found within this.
FULL_IDLE_S = 0.5


def default_owner() -> str:
    """A claim owner unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def call_body(claim: Claim, webhook_url: str | None) -> dict[str, Any]:
    """The body to POST: the request's, with our request id in `metadata` and our webhook.

    Without our webhook URL the publisher's own goes to Bland unchanged.
    """
    body = with_request_id(claim.body, claim.request_id)
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
        clock: Clock = utcnow,
        owner: str | None = None,
        draw: Uniform = random.random,
        stop_canceled: StopCanceled | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self.owner = owner or default_owner()
        self.draw = draw
        self.stop_canceled = stop_canceled
        # Tells the outbox relay that events were committed (else it finds them at its next poll).
        self.on_events = on_events or (lambda: None)
        self.problem: str | None = None  # set while Bland refuses our account
        self.failures = 0  # consecutive rounds the ledger failed
        self.rounds = 0  # claim rounds completed: evidence that the loop has moved on
        self._policy = RetryPolicy(settings.retry_backoff_base_s, settings.retry_backoff_max_s)
        # Consecutive dials that failed for a reason not about the request: hold every claim.
        self._setbacks = Backoff(self._policy.base_s, self._policy.cap_s, jitter=True, draw=draw)
        self._hold_until = 0.0  # monotonic time before which nothing is claimed
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[DialResult]] = set()
        self._queued = QueuedRecorder(ledger, clock)
        self._task: asyncio.Task[None] | None = None
        self.rules = rules_from(settings)
        self.pace = 1.0  # the shared pace read in the last round (Bland's 429s lower it)
        self._held_by: str | None = None  # the limit that held the last round back
        metrics.concurrency_cap.set(settings.max_concurrent_calls)
        metrics.pace.set(1.0)
        metrics.rate_limit.set(settings.max_calls_per_second)
        self.batches = BatchSender(
            settings, ledger, bland, metrics, clock=clock,
            body=lambda claim: call_body(claim, settings.webhook_url),
            record_failure=self._record,
        )  # fmt: skip
        self.coalescer = (
            Coalescer(settings.coalesce_window_s, self.batches.send, self._track)
            if settings.coalesce_window_s > 0
            else None
        )

    def screen(
        self,
        candidates: Sequence[Candidate],
        facts: Mapping[str, NumberFacts],
        now: datetime,
        wanted: int,
    ) -> list[Screened]:
        """The compliance screen of one claim round (pure; run inside the ledger's transaction)."""
        return screen_round(candidates, facts, self.rules, now, wanted)

    def _limits(self, limit: int) -> Limits:
        return settings_limits(self.settings, owner=self.owner, limit=limit, pace=self.pace)

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
        reconciler's sweep turns it into `unknown` later; it is never dialed again blindly.
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

    async def accept(self, calls: Sequence[NewCall], now: datetime) -> list[Accepted]:
        """Write new requests and claim what is due in the same transaction, then POST at once.

        One durable commit before the POST (DESIGN section 1). While the dial loop is not
        running, is stopping or holds (Bland throttles or refuses the account), they are
        only written.
        """
        room = self._claim_room()
        if room <= 0:
            accepted = await self.ledger.accept_calls(calls, now)
            self.on_events()
            self.wake()
            return accepted
        accepted, claims, admission = await self.ledger.accept_and_claim(
            calls, now, self._limits(room), admit, self.screen
        )
        self._observe(admission)
        self.on_events()
        self.submit(claims)
        return accepted

    async def settle(
        self, outcome: Outcome, now: datetime, *, request_id: str | None = None
    ) -> OutcomeResult:
        """Record an outcome; the slot it frees goes to the next due request in the same commit."""
        room = self._claim_room()
        if room <= 0:
            recorded = await self.ledger.record_outcome(outcome, now, request_id=request_id)
            if recorded.changed:
                self.on_events()
                self.wake()
            return recorded
        recorded, claims, admission = await self.ledger.settle_and_claim(
            outcome, now, self._limits(room), admit, self.screen, request_id=request_id
        )
        if recorded.changed:
            self._observe(admission)
            self.on_events()
        self.submit(claims)
        return recorded

    def _claim_room(self) -> int:
        """Claims a write outside the loop may make now: none while stopped, stopping or held."""
        running = self._task is not None and not self._task.done()
        held = self._stopping.is_set() or time.monotonic() < self._hold_until
        return self._room_now() if running and not held else 0

    async def _loop(self) -> None:
        retry = Backoff(0.2, ROUND_RETRY_MAX_S)
        while not self._stopping.is_set():
            try:
                claimed, full = await self.run_once()
            except Exception as exc:  # fail closed: nobody is dialed while the ledger is down
                self.failures += 1
                log.warning("dispatch_round_failed", error=str(exc), failures=self.failures)
                await self._idle(retry.next_s())
                continue
            retry.reset()
            self.failures = 0
            self.rounds += 1
            if not full:
                await self._idle(self._idle_s())
            elif claimed == 0:
                await self._await_room()

    def _idle_s(self) -> float:
        """Rounds every dispatch_idle_s; rarer while every slot is taken (wakes come then)."""
        if self._held_by == "concurrency":
            return max(self.settings.dispatch_idle_s, FULL_IDLE_S)
        return self.settings.dispatch_idle_s

    async def _idle(self, seconds: float) -> None:
        hold_s = self._hold_until - time.monotonic()
        await sleep_until(self._wake, max(seconds, hold_s))
        self._wake.clear()

    async def _await_room(self) -> None:
        """Every connection is busy: wait for one POST to finish (or stop)."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*self._inflight, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    def _room_now(self) -> int:
        room = self.settings.bland_pool_size - len(self._inflight)
        return min(self.settings.dispatch_batch_size, room)

    async def run_once(self) -> tuple[int, bool]:
        """Claim one round and start its POSTs; (claimed, whether more may be due right now)."""
        if time.monotonic() < self._hold_until:
            return 0, False
        limit = self._room_now()
        if limit <= 0:
            return 0, True
        claims, admission = await self.ledger.claim_due(
            self.clock(), self._limits(limit), admit, self.screen
        )
        self._observe(admission)
        self.submit(claims)
        return len(claims), len(claims) == limit and admission.limited_by is None

    def _observe(self, admission: Admission) -> None:
        """Metrics of one round: the limit that held requests back, compliance, the pace."""
        self._held_by = admission.limited_by
        # What /metrics reports as holding due work back.
        self.metrics.limited_by = admission.limited_by
        if admission.limited_by is not None:
            self.metrics.limit_waits.labels(admission.limited_by).inc()
        for item in admission.screened:
            if item.verdict == "suppress":
                self.metrics.compliance_blocks.labels(item.reason or "compliance").inc()
            elif item.verdict == "defer":
                self.metrics.calls_deferred.labels(item.reason or "calling_window").inc()
            elif item.verdict == "hold":
                self.metrics.calls_deferred.labels(item.reason or "same_number").inc()
                self.metrics.limit_waits.labels(item.reason or "same_number").inc()
        if admission.pace != self.pace:
            self.pace = admission.pace
            self.metrics.pace.set(self.pace)
            self.metrics.rate_limit.set(self.settings.max_calls_per_second * self.pace)

    def submit(self, claims: Sequence[Claim]) -> None:
        """Start the POSTs of claims (recipients of `bland` dispatch: in Bland batches)."""
        handed = [claim for claim in claims if claim.dispatch == "bland"]
        if handed:
            self._track(asyncio.create_task(self.batches.send(handed), name="bland-batch"))
        singles = [claim for claim in claims if claim.dispatch != "bland"]
        if self.coalescer is not None and singles:
            self.coalescer.add(singles)
            return
        for claim in singles:
            self._track(asyncio.create_task(self.dial(claim), name=f"dial-{claim.request_id}"))

    def _track(self, task: asyncio.Task[DialResult]) -> None:
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def dial(self, claim: Claim) -> DialResult:
        """POST one claimed request and record the result; returns the `calls_dialed` label."""
        outcome: str | Exception
        try:
            outcome = await self.bland.create_call(call_body(claim, self.settings.webhook_url))
        except Exception as exc:  # every failure is classified and recorded below
            outcome = exc
        result: DialResult
        try:
            result = await self._record(claim, outcome)
            self.on_events()
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

    async def _record(self, claim: Claim, outcome: str | Exception) -> DialResult:
        """Record what the POST did, trying again for a while when the ledger is down.

        A result left unrecorded keeps the row `dialing`: the sweep then takes it for an
        orphan, and an orphan that Bland's list does not show after the grace is dialed again.
        """
        retry = Backoff(0.2, ROUND_RETRY_MAX_S)
        deadline = time.monotonic() + self.settings.reconcile_grace_s / 2
        while True:
            try:
                if isinstance(outcome, str):
                    return await self._record_queued(claim, outcome)
                return await self._record_failure(claim, outcome)
            except StoreUnavailableError as exc:
                delay_s = retry.next_s()
                if time.monotonic() + delay_s > deadline:
                    raise
                log.warning("dial_result_record_retry", request_id=claim.request_id, error=str(exc))
                await asyncio.sleep(delay_s)

    async def _record_queued(self, claim: Claim, call_id: str) -> DialResult:
        self._setbacks.reset()
        self.problem = None
        queued = await self._queued.record(claim, call_id)
        if not queued.recorded:
            # The row moved on without us (e.g. a webhook settled it first); nothing to redo.
            log.warning("queued_claim_stale", request_id=claim.request_id, call_id=call_id)
        if queued.stop is not None and self.stop_canceled is not None:
            # Canceled while the POST was in flight. The cancel is durable: should this stop
            # fail, the outcomes stage's sweep stops the call (calls_to_stop).
            try:
                await self.stop_canceled(queued.stop)
            except Exception as exc:  # the call was recorded; the sweep retries the stop
                log.warning(
                    "stop_after_cancel_deferred", request_id=claim.request_id, error=str(exc)
                )
        return "queued"

    async def _record_failure(self, claim: Claim, exc: Exception) -> DialResult:
        decision = decide(exc, claim.attempt_no, self._policy, self.draw)
        if not decision.expected:
            log.error(
                "dial_failed_unexpectedly", request_id=claim.request_id, error=error_text(exc)
            )
        hold_s = self._hold(decision)
        if decision.action == "pause":
            self.problem = f"Bland refused our account (HTTP {decision.http_status}): {exc}"
            log.error("bland_account_refused", problem=self.problem, paused_s=round(hold_s, 1))
        if decision.result == "throttled":
            self.metrics.limit_waits.labels("bland_429").inc()
            await self._throttled(exc, hold_s)
        await self._write(claim, decision, exc, hold_s)
        return decision.result

    async def _write(self, claim: Claim, decision: Decision, exc: Exception, hold_s: float) -> None:
        """The one ledger write a decision calls for."""
        now = self.clock()
        if decision.action == "fail":
            await self.ledger.record_dial_failed(
                claim, http_status=decision.http_status, message=str(exc),
                errors=decision.errors, now=now,
            )  # fmt: skip
        elif decision.action == "unknown":
            await self.ledger.record_unknown(claim, error=error_text(exc), now=now)
        else:
            delay_s = hold_s if decision.action == "pause" else decision.delay_s
            await self.ledger.record_retry(
                claim,
                not_before=now + timedelta(seconds=delay_s),
                throttled=decision.throttled,
                error=str(exc),
                now=now,
                max_transient_retries=self.settings.max_transient_retries,
            )

    async def _throttled(self, exc: Exception, hold_s: float) -> None:
        """A 429: one number's (it alone waits), or the account's rate (every replica pauses)."""
        if isinstance(exc, ThrottledError) and exc.retry_after_s is not None:
            self.metrics.bland_429.labels("same_number").inc()
            return
        self.metrics.bland_429.labels("rate_limit").inc()
        pause_s = max(self.settings.pause_on_429_s, hold_s)
        self.pace = await self.ledger.note_throttled(self.clock(), pause_s)
        self.metrics.pace.set(self.pace)
        self.metrics.rate_limit.set(self.settings.max_calls_per_second * self.pace)
        log.warning("bland_rate_limited", paused_s=round(pause_s, 2), pace=round(self.pace, 3))

    def _hold(self, decision: Decision) -> float:
        """Hold every claim after a failure not about the request; the hold in seconds."""
        if decision.setback == "none":
            return 0.0
        hold_s = self._setbacks.next_s()
        if decision.setback == "ceiling":  # the account is refused: no jitter, the full hold
            hold_s = ceiling_s(self._setbacks.failures, self._policy.base_s, self._policy.cap_s)
        self._hold_until = max(self._hold_until, time.monotonic() + hold_s)
        return hold_s
