"""The HTTP app on one port: health probes, Prometheus metrics and Bland's webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas import wire
from service.ledger import Ledger, LedgerCounts
from service.metrics import WAIT_REASONS, Metrics
from service.outcomes.webhooks import WebhookIntake, verify_signature
from service.settings import Settings

log = structlog.get_logger(__name__)

# Post-call payloads carry whole transcripts; far above any real one, far below harm.
WEBHOOK_MAX_BYTES = 4 * 1024 * 1024
SIGNATURE_HEADER = "X-Webhook-Signature"
GAUGE_REFRESH_TIMEOUT_S = 2.0
GAUGE_REFRESH_MIN_S = 1.0  # several scrapers must not turn into several ledger scans a second

Readiness = Callable[[], Awaitable[Mapping[str, str]]]


class BodyTooLargeError(Exception):
    """The request body is over the cap; it was not read to the end."""


@dataclass(frozen=True)
class HttpParts:
    """What the HTTP app talks to; the composition root builds them."""

    settings: Settings
    metrics: Metrics
    ledger: Ledger
    webhooks: WebhookIntake
    readiness: Readiness  # name -> "ok" or what is wrong; ready when all say "ok"


def set_gauges(metrics: Metrics, counts: LedgerCounts) -> None:
    """Backlog by state, due work and what holds it back, unsent events and slots held."""
    for state, count in counts.by_state.items():
        metrics.backlog.labels(state).set(count)
    metrics.outbox_pending.set(counts.outbox_pending)
    metrics.active_calls.set(counts.active_slots)
    metrics.backlog_due.set(counts.due)
    for reason in WAIT_REASONS:
        metrics.backlog_waiting.labels(reason).set(
            counts.due if reason == metrics.limited_by else 0
        )


def set_readiness(metrics: Metrics, checks: Mapping[str, str]) -> None:
    """dialer_ready{check}: 1 for "ok", 0 for anything else."""
    for check, value in checks.items():
        metrics.ready.labels(check).set(1 if value == "ok" else 0)


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The raw body, or BodyTooLargeError as soon as it passes `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _refresh_gauges(parts: HttpParts) -> None:
    try:
        counts = await asyncio.wait_for(
            parts.ledger.counts(datetime.now(UTC)), GAUGE_REFRESH_TIMEOUT_S
        )
    except Exception as exc:  # the scrape still answers; the gauges keep their last value
        log.warning("gauge_refresh_failed", error=str(exc) or type(exc).__name__)
    else:
        set_gauges(parts.metrics, counts)
    try:
        set_readiness(parts.metrics, await parts.readiness())
    except Exception as exc:  # the scrape still answers; readiness keeps its last value
        log.warning("readiness_gauge_failed", error=str(exc) or type(exc).__name__)


def create_app(parts: HttpParts) -> Starlette:
    """The Starlette app: `/healthz`, `/readyz`, `/metrics`, `/webhooks/bland[/batch]`."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        checks = dict(await parts.readiness())
        ready = all(value == "ok" for value in checks.values())
        body = {"ready": ready, "checks": checks}
        if not ready:
            body["not_ready"] = sorted(name for name, value in checks.items() if value != "ok")
        return JSONResponse(body, status_code=200 if ready else 503)

    refreshed_at = [-GAUGE_REFRESH_MIN_S]

    async def metrics(_: Request) -> Response:
        now_s = time.monotonic()
        if now_s - refreshed_at[0] >= GAUGE_REFRESH_MIN_S:
            refreshed_at[0] = now_s
            await _refresh_gauges(parts)
        return Response(generate_latest(parts.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def bland_webhook(request: Request) -> Response:
        try:
            raw = await read_capped(request, WEBHOOK_MAX_BYTES)
        except BodyTooLargeError:
            parts.metrics.webhooks.labels("too_large").inc()
            return JSONResponse({"result": "too_large"}, status_code=413)
        result = await parts.webhooks.handle(raw, request.headers.get(SIGNATURE_HEADER))
        return JSONResponse({"result": result.result}, status_code=result.http_status)

    async def batch_webhook(request: Request) -> Response:
        return await _batch_status(request, parts)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/webhooks/bland", bland_webhook, methods=["POST"]),
            Route("/webhooks/bland/batch", batch_webhook, methods=["POST"]),
        ]
    )


async def _batch_status(request: Request, parts: HttpParts) -> Response:
    """Batch status: verified when signed, logged (outcomes come from each call's webhook and polls)."""
    try:
        raw = await read_capped(request, WEBHOOK_MAX_BYTES)
    except BodyTooLargeError:
        return JSONResponse({"result": "too_large"}, status_code=413)
    signature = request.headers.get(SIGNATURE_HEADER)
    secret = parts.settings.webhook_secret
    if signature is not None and not verify_signature(
        secret.get_secret_value() if secret else "", raw, signature
    ):
        parts.metrics.webhooks.labels("bad_signature").inc()
        return JSONResponse({"result": "bad_signature"}, status_code=401)
    try:
        payload = wire.load(raw)
    except ValueError:
        parts.metrics.webhooks.labels("invalid").inc()
        return JSONResponse({"result": "invalid"}, status_code=400)
    fields = payload if isinstance(payload, dict) else {}
    log.info(
        "batch_status_webhook",
        signed=signature is not None,
        batch_id=fields.get("batch_id"),
        status=fields.get("status"),
    )
    parts.metrics.webhooks.labels("batch_status").inc()
    batch_id = fields.get("batch_id")
    # Only a verified webhook may fail recipients; a lost one is made up by the batch rounds.
    signed = signature is not None and secret is not None
    if fields.get("status") == "failed" and signed and isinstance(batch_id, str):
        reason = str(fields.get("reason") or fields.get("message") or "Bland's batch failed")
        code = fields.get("code")
        await parts.ledger.fail_handoffs(
            batch_id, code=code if isinstance(code, str) else None, reason=reason,
            now=datetime.now(UTC),
        )  # fmt: skip
    return JSONResponse({"result": "accepted"})
