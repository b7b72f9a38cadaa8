"""Bland's HTTP API through one httpx client; every failure classified into the error tree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from service.errors import (
    AccountError,
    DialerError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)
from service.metrics import Metrics
from service.settings import Settings

USER_AGENT = "bland-dialer/0.1"
ACCOUNT_STATUSES = frozenset({401, 402, 403})
BLACKLISTED = "this number is blacklisted"
SAME_NUMBER = "calls can only be sent every 10 seconds to the same number"
SAME_NUMBER_WAIT_S = 10.0
# Failures where httpx never handed the request to the network: retrying cannot double dial.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def describe(payload: object, status_code: int) -> tuple[str, list[str]]:
    """Bland's message and error strings from any of its error envelopes."""
    if not isinstance(payload, Mapping):
        return f"HTTP {status_code}", [f"HTTP {status_code}"]
    errors = [_error_text(item) for item in payload.get("errors") or [] if item is not None]
    message = payload.get("message")
    if not isinstance(message, str) or not message:
        # {"error": "...", "details": "..."} (418, phone format) or {"data": null, "errors": [...]}
        parts = [p for p in (payload.get("error"), payload.get("details")) if isinstance(p, str)]
        message = ": ".join(parts) or (errors[0] if errors else f"HTTP {status_code}")
    return message, errors or [message]


def _error_text(item: object) -> str:
    if isinstance(item, Mapping):
        text = item.get("message") or item.get("error")
        return str(text) if text else str(dict(item))
    return str(item)


def classify_create(status_code: int, payload: object) -> str:
    """The call id of a placed call, or raise the error that says what to do next.

    - 429 waits (never spends the retry budget), except "This number is blacklisted.": it is
      about the number, not our pace, so it can never succeed and repeating it risks a block.
    - 401/402/403 (bad key, no balance, flagged account) would fail every request alike:
      AccountError pauses the dispatcher and keeps requests pending instead of failing them all.
    - A 4xx that is not Bland's JSON (a proxy, a wrong base URL) is treated the same way.
    - Other 4xx: Bland refused this request; it is final. 5xx, 408 and an unreadable 200 may
      hide a placed call: unknown outcome, reconciled, never redialed.
    """
    if status_code == 200:
        return _call_id(payload)
    message, errors = describe(payload, status_code)
    if status_code == 429:
        if BLACKLISTED in message.lower():
            raise PermanentError(message, errors, status_code)
        wait_s = SAME_NUMBER_WAIT_S if SAME_NUMBER in message.lower() else None
        raise ThrottledError(message, retry_after_s=wait_s)
    if status_code in ACCOUNT_STATUSES:
        raise AccountError(message, status_code)
    if 400 <= status_code < 500 and status_code != 408:
        if not isinstance(payload, Mapping):
            raise AccountError(f"HTTP {status_code} that is not Bland's answer", status_code)
        raise PermanentError(message, errors, status_code)
    raise UnknownOutcomeError(f"HTTP {status_code}: {message}")


def _call_id(payload: object) -> str:
    if isinstance(payload, Mapping) and payload.get("status") != "error":
        call_id = payload.get("call_id")
        if isinstance(call_id, str) and call_id:
            return call_id
    raise UnknownOutcomeError("HTTP 200 without a call_id")


def classify_read(status_code: int, payload: object) -> None:
    """Raise unless a read (details, list, stop) succeeded; reads are always safe to retry."""
    if 200 <= status_code < 300:
        return
    message, errors = describe(payload, status_code)
    if status_code == 429:
        raise ThrottledError(message)
    if status_code in ACCOUNT_STATUSES:
        raise AccountError(message, status_code)
    if 400 <= status_code < 500 and status_code != 408:
        raise PermanentError(message, errors, status_code)
    raise TransientError(f"HTTP {status_code}: {message}")


def classify_transport(exc: httpx.HTTPError, *, sent_is_unknown: bool = True) -> DialerError:
    """Where httpx failed decides: before sending is transient, after it the outcome is unknown."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, NOT_SENT) or not sent_is_unknown:
        return TransientError(text)
    return UnknownOutcomeError(text)


def status_label(status_code: int) -> str:
    """A low-cardinality status for the latency histogram (2xx, 4xx, 429, 5xx...)."""
    return "429" if status_code == 429 else f"{status_code // 100}xx"


def max_request_s(settings: Settings) -> float:
    """The longest one Bland request can take before httpx gives up (every phase at its limit)."""
    return 2 * settings.bland_connect_timeout_s + 2 * settings.bland_read_timeout_s


class BlandClient:
    """Bland's call endpoints over one pooled `httpx.AsyncClient`."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if settings.bland_api_key is not None:
            headers["Authorization"] = settings.bland_api_key.get_secret_value()
        self._metrics = metrics
        self._create_deadline_s = max_request_s(settings)
        self._client = httpx.AsyncClient(
            base_url=settings.bland_base_url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.bland_connect_timeout_s,
                read=settings.bland_read_timeout_s,
                write=settings.bland_read_timeout_s,
                pool=settings.bland_connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=settings.bland_pool_size,
                max_keepalive_connections=settings.bland_pool_size,
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def create_call(self, body: Mapping[str, Any]) -> str:
        """POST /v1/calls; the call id, or a DialerError saying whether it may be retried.

        httpx's timeouts bound each read, not the whole exchange: a server trickling its answer
        could hold the POST past the sweep of stale claims, so the whole POST has a deadline.
        """
        try:
            async with asyncio.timeout(self._create_deadline_s):
                response = await self._send("create_call", "POST", "/v1/calls", json=dict(body))
        except httpx.HTTPError as exc:
            raise classify_transport(exc) from exc
        except TimeoutError as exc:
            raise UnknownOutcomeError(
                f"no complete answer within {self._create_deadline_s:g} s"
            ) from exc
        return classify_create(response.status_code, _json(response))

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """GET /v1/calls/{id}; None when Bland does not know the id (404)."""
        response = await self._read("get_call", "GET", f"/v1/calls/{call_id}")
        if response.status_code == 404:
            return None
        payload = _json(response)
        classify_read(response.status_code, payload)
        if not isinstance(payload, dict):
            raise TransientError("call details are not a JSON object")
        return payload

    async def list_calls(
        self,
        *,
        to_number: str,
        start_date: datetime | None = None,
        limit: int = 100,
        ascending: bool = False,
    ) -> list[dict[str, Any]]:
        """GET /v1/calls filtered by number (newest first unless `ascending`)."""
        params: dict[str, str | int] = {"to_number": to_number, "limit": limit}
        if start_date is not None:
            params["start_date"] = start_date.isoformat()
        if ascending:
            params["ascending"] = "true"
        response = await self._read("list_calls", "GET", "/v1/calls", params=params)
        payload = _json(response)
        classify_read(response.status_code, payload)
        calls = payload.get("calls") if isinstance(payload, dict) else None
        if not isinstance(calls, list):
            raise TransientError("call list without `calls`")
        return [c for c in calls if isinstance(c, dict)]

    async def stop_call(self, call_id: str) -> bool:
        """POST /v1/calls/{id}/stop; False when Bland does not know the call (or it is over)."""
        response = await self._read("stop_call", "POST", f"/v1/calls/{call_id}/stop")
        if response.status_code in (400, 404):
            return False
        classify_read(response.status_code, _json(response))
        return True

    async def _read(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._send(endpoint, method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise classify_transport(exc, sent_is_unknown=False) from exc

    async def _send(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        status = "transport_error"
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            status = "timeout"
            raise
        else:
            status = status_label(response.status_code)
            return response
        finally:
            elapsed_s = time.perf_counter() - started
            self._metrics.bland_request_seconds.labels(endpoint, status).observe(elapsed_s)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None
