"""Call outcomes: signed post-call webhooks from Bland, and polling of overdue calls."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
import structlog

from service.backoff import poll_delay_s
from service.bland import BlandClient
from service.dispatcher import REQUEST_ID_KEY
from service.errors import DialerError, StoreUnavailableError
from service.ledger import Ledger, Outcome, OutcomeResult, Tracked
from service.loop import Periodic
from service.metrics import Metrics
from service.settings import Settings
from service.states import classify_outcome
from service.webhook_relay import WebhookRelay

log = structlog.get_logger(__name__)

SIGNATURE_PREFIX = "sha256="
FINISHED_QUEUE_STATUSES = frozenset(
    {"complete", "completed", "pre_queue_error", "queue_error", "call_error", "complete_error"}
)
POLL_CAP_S = 900.0  # an overdue call is looked at again at least every 15 minutes
POLL_CONCURRENCY = 8
Source = Literal["webhook", "poll"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def verify_signature(secret: str, raw_body: bytes, signature: str | None) -> bool:
    """True when `signature` is the hex HMAC-SHA256 of the raw bytes under `secret`.

    Bland documents a bare lowercase hex digest. A `sha256=` prefix and upper-case hex are
    tolerated: the digest must still match exactly, so neither weakens the check.
    """
    if not secret or not signature:
        return False
    provided = signature.strip()
    if provided[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        provided = provided[len(SIGNATURE_PREFIX) :]
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), provided.lower().encode())


def is_post_call(payload: Mapping[str, Any]) -> bool:
    """Post-call payloads carry call_id with completed/queue_status; live events do not."""
    if "category" in payload and "log_level" in payload:
        return False
    has_id = isinstance(payload.get("call_id") or payload.get("c_id"), str)
    return has_id and ("completed" in payload or "queue_status" in payload)


def parse_outcome(payload: object, source: Source) -> Outcome | None:
    """The outcome a post-call payload or call-details object describes; None for anything else."""
    if not isinstance(payload, Mapping) or not is_post_call(payload):
        return None
    call_id = payload.get("call_id") or payload.get("c_id")
    if not isinstance(call_id, str) or not call_id:
        return None
    queue_status = _text(payload.get("queue_status"))
    completed = payload.get("completed")
    if not isinstance(completed, bool):  # `completed` wins; without it, the queue status says
        completed = (queue_status or "").lower() in FINISHED_QUEUE_STATUSES
    metadata = payload.get("metadata")
    return Outcome(
        call_id=call_id,
        status=_text(payload.get("status")),
        answered_by=_text(payload.get("answered_by")),
        call_length_min=_number(payload.get("call_length")),
        duration_s=_number(payload.get("corrected_duration")),
        summary=_text(payload.get("summary")),
        disposition_tag=_text(payload.get("disposition_tag")),
        recording_url=_text(payload.get("recording_url")),
        error_message=_text(payload.get("error_message")),
        price_usd=_number(payload.get("price")),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
        completed=completed,
        source=source,
        raw=dict(payload),
        queue_status=queue_status,
    )


def request_id_of(outcome: Outcome) -> str | None:
    """Our request id as echoed in the call's metadata, if present."""
    value = (outcome.metadata or {}).get(REQUEST_ID_KEY)
    return value if isinstance(value, str) and value else None


def is_final(outcome: Outcome) -> bool:
    """True when the outcome settles the request (the call is over)."""
    return classify_outcome(outcome.status, outcome.completed, outcome.queue_status) is not None


async def record_and_count(
    ledger: Ledger,
    metrics: Metrics,
    outcome: Outcome,
    now: datetime,
    *,
    request_id: str | None = None,
) -> OutcomeResult:
    """Record the outcome; count it when it settled the request (a replay counts nothing)."""
    recorded = await ledger.record_outcome(outcome, now, request_id=request_id)
    if recorded.changed:
        metrics.call_outcomes.labels(recorded.state or "", outcome.status or "").inc()
    return recorded


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    """Bland's numbers arrive as numbers or as strings (`corrected_duration: "45"`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class WebhookResult:
    """What a webhook did; `http_status` is the answer for Bland (it retries on non-2xx)."""

    result: str  # accepted, replay, in_progress, unknown_call, ignored, bad_signature, invalid, unavailable
    http_status: int
    request_id: str | None = None
    state: str | None = None


class OutcomeService:
    """Verifies, records and relays Bland's post-call webhooks."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        relay_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value() if secret is not None else ""
        self._relay = WebhookRelay(
            metrics, timeout_s=settings.publisher_webhook_timeout_s, transport=relay_transport
        )

    async def aclose(self) -> None:
        """Let relays in flight finish (each is bounded by its timeout), then close."""
        await self._relay.aclose()

    async def handle_bland_webhook(self, raw_body: bytes, signature: str | None) -> WebhookResult:
        """Verify (before parsing), record the outcome once, relay it; never blocks on relays."""
        if not verify_signature(self._secret, raw_body, signature):
            if not self._secret:
                log.error("webhook_refused_no_secret", hint="set DIALER_WEBHOOK_SECRET")
            return self._count(WebhookResult("bad_signature", 401))
        try:
            payload = json.loads(raw_body)
        except ValueError:
            return self._count(WebhookResult("invalid", 400))
        outcome = parse_outcome(payload, "webhook")
        if outcome is None:
            return self._count(WebhookResult("ignored", 200))
        try:
            recorded = await record_and_count(
                self.ledger, self.metrics, outcome, self.clock(), request_id=request_id_of(outcome)
            )
        except StoreUnavailableError as exc:  # not 2xx: Bland delivers it again later
            log.warning("webhook_not_recorded", call_id=outcome.call_id, error=str(exc))
            return self._count(WebhookResult("unavailable", 503))
        result = self._result(outcome, recorded)
        if recorded.changed and recorded.publisher_webhook:
            self._relay.start(recorded.publisher_webhook, raw_body, signature or "")
        return self._count(result)

    def _result(self, outcome: Outcome, recorded: OutcomeResult) -> WebhookResult:
        if not recorded.found:
            log.info("webhook_for_unknown_call", call_id=outcome.call_id)
            return WebhookResult("unknown_call", 200)
        if recorded.changed:
            name = "accepted"
        elif is_final(outcome):
            name = "replay"
        else:
            name = "in_progress"
        return WebhookResult(name, 200, recorded.request_id, recorded.state)

    def _count(self, result: WebhookResult) -> WebhookResult:
        self.metrics.webhooks.labels(result.result).inc()
        return result


class LedgerRounds(Periodic):
    """Periodic rounds over the ledger that ask Bland: the poller and the reconciler."""

    round_name: ClassVar[str]
    failed_event: ClassVar[str]
    default_batch_size: ClassVar[int]

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(
            self.round_name,
            interval_s=self.interval_s(settings),
            failed_event=self.failed_event,
            log=structlog.get_logger(type(self).__module__),
        )
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self.batch_size = batch_size or self.default_batch_size

    @staticmethod
    @abstractmethod
    def interval_s(settings: Settings) -> float:
        """Seconds between rounds."""


class OutcomePoller(LedgerRounds):
    """Asks Bland for calls whose outcome is overdue (a webhook lost or never configured)."""

    round_name = "outcome-poller"
    failed_event = "poll_round_failed"
    default_batch_size = 100

    @staticmethod
    def interval_s(settings: Settings) -> float:
        """Seconds between polling rounds."""
        return settings.poll_interval_s

    async def run_once(self) -> int:
        """Check every overdue call once; returns how many outcomes were recorded."""
        due = await self.ledger.overdue_calls(self.clock(), self.batch_size)
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def bounded(tracked: Tracked) -> bool:
            async with gate:
                return await self.check(tracked)

        results = await asyncio.gather(*(bounded(t) for t in due), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:  # every check ran to its end; the round reports the first failure
            raise failed[0]
        return sum(r is True for r in results)

    async def check(self, tracked: Tracked) -> bool:
        """Record the call's outcome if Bland has one, else look again later."""
        try:
            details = await self.bland.get_call(tracked.call_id)
        except DialerError as exc:
            log.info("poll_failed", call_id=tracked.call_id, error=str(exc))
            details = None
        outcome = parse_outcome(details, "poll") if details is not None else None
        if outcome is not None and is_final(outcome):
            recorded = await record_and_count(self.ledger, self.metrics, outcome, self.clock())
            return recorded.changed
        now = self.clock()
        overdue_s = (now - (tracked.outcome_due_at or now)).total_seconds()
        delay_s = poll_delay_s(overdue_s, self.settings.poll_interval_s, POLL_CAP_S)
        await self.ledger.postpone_check(tracked.request_id, now + timedelta(seconds=delay_s))
        return False
