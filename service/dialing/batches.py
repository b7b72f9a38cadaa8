"""`BatchSender`: claimed recipients of `bland` dispatch sent as Bland batches, chunk by chunk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from service.bland.batches import (
    legacy_batch_body,
    legacy_groups,
    status_webhook_url,
    v2_batch_body,
)
from service.bland.client import BlandClient
from service.clock import Clock
from service.dialing.decisions import DialResult
from service.errors import PermanentError
from service.ledger import Claim, Ledger
from service.metrics import Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)

# The dispatcher's one ledger write for a failed POST (retry, fail, unknown, pause).
RecordFailure = Callable[[Claim, Exception], Awaitable[DialResult]]
Body = Callable[[Claim], dict[str, object]]


def chunked(claims: Sequence[Claim], size: int) -> list[list[Claim]]:
    """Claims in chunks of at most `size`, one batch request's recipients together."""
    ordered = sorted(claims, key=lambda c: (c.batch_request_id or "", c.recipient_index or 0))
    return [list(ordered[i : i + size]) for i in range(0, len(ordered), size)]


class BatchSender:
    """One `POST /v2/batches/create` per chunk; a failed one follows the rules of a single call."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Clock,
        body: Body,
        record_failure: RecordFailure,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self.body = body
        self.record_failure = record_failure

    async def send(self, claims: Sequence[Claim]) -> DialResult:
        """Send every chunk; the result label of the last chunk."""
        result: DialResult = "queued"
        for chunk in chunked(claims, self.settings.bland_batch_chunk):
            result = await self._send_chunk(chunk)
        return result

    async def _send_chunk(self, chunk: list[Claim]) -> DialResult:
        batch_ids = sorted({c.batch_request_id for c in chunk if c.batch_request_id})
        label = f"dialer {', '.join(batch_ids)}" if batch_ids else "dialer"
        status_webhook = status_webhook_url(self.settings.webhook_url)
        bodies = [self.body(claim) for claim in chunk]
        if self.settings.bland_batches_api == "v1" and all("task" in b for b in bodies):
            result: DialResult = "queued"
            for members in legacy_groups(bodies):
                body = legacy_batch_body([bodies[i] for i in members], label=label)
                if status_webhook is not None:
                    body["batch_webhook"] = status_webhook
                result = await self._post([chunk[i] for i in members], body, legacy=True)
            return result
        body = v2_batch_body(bodies, description=label, status_webhook=status_webhook)
        return await self._post(chunk, body, legacy=False)

    async def _post(self, chunk: list[Claim], body: dict[str, Any], *, legacy: bool) -> DialResult:
        try:
            bland_batch_id = await self.bland.create_batch(body, legacy=legacy)
        except Exception as exc:  # classified per claim: retry, fail, unknown (looked up) or pause
            batch_ids = sorted({c.batch_request_id for c in chunk if c.batch_request_id})
            return await self._failed(chunk, batch_ids, exc)
        stop_owed = await self.ledger.record_batch_queued(
            chunk, bland_batch_id, self.clock(), self.settings.reconcile_grace_s
        )
        self.metrics.calls_dialed.labels("queued").inc(len(chunk))
        log.info("bland_batch_queued", bland_batch_id=bland_batch_id, calls=len(chunk))
        if stop_owed:  # a batch.cancel came while the POST was in flight
            await self.bland.stop_batch(bland_batch_id)
        return "queued"

    async def _failed(self, chunk: list[Claim], batch_ids: list[str], exc: Exception) -> DialResult:
        log.warning("bland_batch_failed", calls=len(chunk), error=str(exc))
        result: DialResult = "unrecorded"
        for claim in chunk:
            result = await self.record_failure(claim, exc)
            self.metrics.calls_dialed.labels(result).inc()
        if isinstance(exc, PermanentError):
            await self.ledger.record_batch_failed(
                batch_ids, code=str(exc.http_status), reason=str(exc), now=self.clock()
            )
        return result


class Coalescer:
    """Single calls claimed within `window_s` of each other go out as one Bland batch.

    Off unless DIALER_COALESCE_WINDOW_S is set: a call waits up to the window before its POST.
    """

    def __init__(
        self,
        window_s: float,
        send: Callable[[Sequence[Claim]], Awaitable[DialResult]],
        track: Callable[[asyncio.Task[DialResult]], None],
    ) -> None:
        self.window_s = window_s
        self.send = send
        self.track = track
        self._held: list[Claim] = []
        self._flush: asyncio.Task[DialResult] | None = None

    def add(self, claims: Sequence[Claim]) -> None:
        """Hold the claims; the first of a window starts its timer."""
        self._held.extend(claims)
        if self._flush is None:
            self._flush = asyncio.create_task(self._later(), name="coalesce")
            self.track(self._flush)

    async def _later(self) -> DialResult:
        await asyncio.sleep(self.window_s)
        claims, self._held, self._flush = self._held, [], None
        return await self.send(claims)
