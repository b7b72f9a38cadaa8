"""`WebhookForwarder`: Bland's post-call webhook passed on to the publisher's own URL, best effort."""

from __future__ import annotations

import asyncio

import httpx
import structlog

from service.metrics import Metrics

log = structlog.get_logger(__name__)


class WebhookForwarder:
    """POSTs Bland's exact bytes and signature to a publisher's webhook, once, in the background."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.metrics = metrics
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, transport=transport
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, url: str, raw_body: bytes, signature: str) -> None:
        """Forward in the background: the caller (Bland's webhook) never waits for it."""
        task = asyncio.create_task(self.forward_once(url, raw_body, signature))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Let forwards in flight finish (each is bounded by its timeout), then close."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._client.aclose()

    async def forward_once(self, url: str, raw_body: bytes, signature: str) -> None:
        """POST the bytes and signature; the result is logged and counted, never retried."""
        headers = {"Content-Type": "application/json", "X-Webhook-Signature": signature}
        try:
            response = await self._client.post(url, content=raw_body, headers=headers)
        except httpx.HTTPError as exc:
            self.metrics.webhook_relays.labels("error").inc()
            log.warning("webhook_relay_failed", error=type(exc).__name__)
            return
        ok = 200 <= response.status_code < 300
        self.metrics.webhook_relays.labels("delivered" if ok else "refused").inc()
        if not ok:
            log.warning("webhook_relay_refused", http_status=response.status_code)
