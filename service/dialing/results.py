"""`DialResults`: a claim POSTed and its result recorded; the hold, pace and problem results set."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog

from service.backoff import Backoff, Uniform, ceiling_s
from service.bland.client import BlandClient
from service.bland.metadata import with_request_id
from service.clock import Clock, utcnow
from service.dialing.decisions import Decision, DialResult, RetryPolicy, decide, error_text
from service.dialing.recorder import QueuedRecorder
from service.errors import StoreUnavailableError, ThrottledError
from service.ledger import Admission, CallToStop, Claim, Ledger
from service.logs import mask_phone
from service.metrics import Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)

# Stops the call of a request canceled while its POST was in flight (the outcomes stage's).
StopCanceled = Callable[[CallToStop], Awaitable[object]]
ROUND_RETRY_MAX_S = 5.0


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


class DialResults:
    """One POST and its ledger write, a round's metrics; setbacks hold claims or lower the pace."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        draw: Uniform = random.random,
        stop_canceled: StopCanceled | None = None,
        on_events: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.on_events = on_events
        self.clock = clock
        self.draw = draw
        self.stop_canceled = stop_canceled
        self.problem: str | None = None  # set while Bland refuses our account
        self.pace = 1.0  # the shared pace read in the last round (Bland's 429s lower it)
        self.hold_until = 0.0  # monotonic time before which nothing is claimed
        self.held_by: str | None = None  # the limit that held the last round back
        self._policy = RetryPolicy(settings.retry_backoff_base_s, settings.retry_backoff_max_s)
        # Consecutive dials that failed for a reason not about the request: hold every claim.
        self._setbacks = Backoff(self._policy.base_s, self._policy.cap_s, jitter=True, draw=draw)
        self._queued = QueuedRecorder(ledger, clock)
        metrics.pace.set(1.0)
        metrics.rate_limit.set(settings.max_calls_per_second)

    def observe(self, admission: Admission) -> None:
        """Metrics of one round: the limit that held requests back, compliance, the pace."""
        self.held_by = admission.limited_by
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
            self.set_pace(admission.pace)

    def set_pace(self, pace: float) -> None:
        """The shared pace, and the rate it allows on /metrics."""
        self.pace = pace
        self.metrics.pace.set(self.pace)
        self.metrics.rate_limit.set(self.settings.max_calls_per_second * self.pace)

    async def dial(self, claim: Claim) -> DialResult:
        """POST one claimed request and record the result; returns the `calls_dialed` label."""
        outcome: str | Exception
        try:
            outcome = await self.bland.create_call(call_body(claim, self.settings.webhook_url))
        except Exception as exc:  # every failure is classified and recorded below
            outcome = exc
        result: DialResult
        try:
            result = await self.record(claim, outcome)
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

    async def record(self, claim: Claim, outcome: str | Exception) -> DialResult:
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
        self.set_pace(await self.ledger.note_throttled(self.clock(), pause_s))
        log.warning("bland_rate_limited", paused_s=round(pause_s, 2), pace=round(self.pace, 3))

    def _hold(self, decision: Decision) -> float:
        """Hold every claim after a failure not about the request; the hold in seconds."""
        if decision.setback == "none":
            return 0.0
        hold_s = self._setbacks.next_s()
        if decision.setback == "ceiling":  # the account is refused: no jitter, the full hold
            hold_s = ceiling_s(self._setbacks.failures, self._policy.base_s, self._policy.cap_s)
        self.hold_until = max(self.hold_until, time.monotonic() + hold_s)
        return hold_s
