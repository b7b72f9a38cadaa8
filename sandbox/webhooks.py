"""Signed webhook delivery: HMAC-SHA256 hex of the raw body in X-Webhook-Signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

SIGNATURE_HEADER = "X-Webhook-Signature"


def encode(payload: object) -> bytes:
    """The exact bytes sent (compact JSON, like JSON.stringify)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `body` keyed with `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay_s(base_s: float, attempt: int) -> float:
    """Exponential backoff before retry number `attempt` (1-based), capped at 30 s."""
    return float(min(30.0, base_s * 2 ** (attempt - 1)))


@dataclass
class WebhookSender:
    """POSTs webhooks and keeps a log of every attempt for the admin endpoints."""

    client: httpx.AsyncClient
    secret: str | None
    retry_delay_s: float = 1.0
    log: list[dict[str, Any]] = field(default_factory=list)

    def _record(self, entry: dict[str, Any]) -> None:
        self.log.append({**entry, "at": datetime.now(UTC).isoformat()})

    def lost(self, kind: str, url: str, ids: dict[str, Any]) -> None:
        """Note a webhook the fault injection decided never to send."""
        self._record({"kind": kind, "url": url, "attempt": 0, "lost": True, **ids})

    async def deliver(
        self,
        kind: str,
        url: str,
        payload: object,
        *,
        retries: int,
        timeout_s: float,
        ids: dict[str, Any],
    ) -> bool:
        """Send until a 2xx or the retries are spent; True when delivered."""
        body = encode(payload)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        for attempt in range(1, retries + 2):
            if attempt > 1:
                await asyncio.sleep(retry_delay_s(self.retry_delay_s, attempt - 1))
            entry: dict[str, Any] = {"kind": kind, "url": url, "attempt": attempt, **ids}
            try:
                response = await self.client.post(
                    url, content=body, headers=headers, timeout=timeout_s
                )
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                self._record({**entry, "error": type(exc).__name__, "delivered": False})
                continue
            ok = 200 <= response.status_code < 300
            self._record({**entry, "status_code": response.status_code, "delivered": ok})
            if ok:
                return True
        return False
