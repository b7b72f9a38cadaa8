"""`WebhookIntake`: Bland's signed post-call webhooks, verified, recorded once, forwarded."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

import httpx
import structlog

from schemas import wire
from service.clock import Clock, utcnow
from service.errors import StoreUnavailableError
from service.ledger import Ledger, Outcome, OutcomeResult
from service.metrics import Metrics
from service.outcomes.forwarding import WebhookForwarder
from service.outcomes.payloads import is_final, parse_outcome, request_id_of
from service.outcomes.settlement import RecordOutcome, settle
from service.settings import Settings

log = structlog.get_logger(__name__)

SIGNATURE_PREFIX = "sha256="
# The `result` label of dialer_webhooks_total.
WebhookResultName = Literal[
    "accepted", "replay", "in_progress", "unknown_call", "ignored", "bad_signature",
    "invalid", "unavailable",
]  # fmt: skip


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


@dataclass(frozen=True)
class WebhookResult:
    """What a webhook did; `http_status` is the answer for Bland (it retries on non-2xx)."""

    result: WebhookResultName
    http_status: int
    request_id: str | None = None
    state: str | None = None


class WebhookIntake:
    """Verifies, records and forwards Bland's post-call webhooks."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        forward_transport: httpx.AsyncBaseTransport | None = None,
        record: RecordOutcome | None = None,
    ) -> None:
        self.settings = settings
        # A settled call frees its concurrency slot: the dispatcher's record hands it on at once.
        self.record = record or ledger.record_outcome
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value() if secret is not None else ""
        self._forwarder = WebhookForwarder(
            metrics, timeout_s=settings.publisher_webhook_timeout_s, transport=forward_transport
        )

    async def aclose(self) -> None:
        """Let forwards in flight finish (each is bounded by its timeout), then close."""
        await self._forwarder.aclose()

    async def handle(self, raw_body: bytes, signature: str | None) -> WebhookResult:
        """Verify (before parsing), record the outcome once, forward it; never blocks on that."""
        if not verify_signature(self._secret, raw_body, signature):
            if not self._secret:
                log.error("webhook_refused_no_secret", hint="set DIALER_WEBHOOK_SECRET")
            return self._count(WebhookResult("bad_signature", 401))
        try:
            payload = wire.load(raw_body)
        except ValueError:
            return self._count(WebhookResult("invalid", 400))
        outcome = parse_outcome(payload, "webhook")
        if outcome is None:
            return self._count(WebhookResult("ignored", 200))
        try:
            recorded = await settle(
                self.record, self.metrics, outcome, self.clock(), request_id=request_id_of(outcome)
            )
        except StoreUnavailableError as exc:  # not 2xx: Bland delivers it again later
            log.warning("webhook_not_recorded", call_id=outcome.call_id, error=str(exc))
            return self._count(WebhookResult("unavailable", 503))
        result = self._result(outcome, recorded)
        if recorded.changed and recorded.publisher_webhook:
            self._forwarder.start(recorded.publisher_webhook, raw_body, signature or "")
        return self._count(result)

    def _result(self, outcome: Outcome, recorded: OutcomeResult) -> WebhookResult:
        if not recorded.found:
            log.info("webhook_for_unknown_call", call_id=outcome.call_id)
            return WebhookResult("unknown_call", 200)
        name: WebhookResultName
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
