"""Bland's HTTP API through one httpx client; every failure classified into the error tree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from service.bland.batches import classify_batch_create, classify_legacy_batch_create
from service.bland.classify import (
    classify_create,
    classify_read,
    classify_transport,
    status_label,
)
from service.bland.streams import lean_transport
from service.errors import TransientError, UnknownOutcomeError
from service.metrics import Metrics
from service.settings import Settings

USER_AGENT = "bland-dialer/0.1"


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
        limits = httpx.Limits(
            max_connections=settings.bland_pool_size,
            max_keepalive_connections=settings.bland_pool_size,
            keepalive_expiry=settings.bland_keepalive_s,
        )
        self._client = httpx.AsyncClient(
            base_url=settings.bland_base_url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.bland_connect_timeout_s,
                read=settings.bland_read_timeout_s,
                write=settings.bland_read_timeout_s,
                pool=settings.bland_connect_timeout_s,
            ),
            limits=limits,
            transport=transport or lean_transport(limits),
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

    async def create_batch(self, body: Mapping[str, Any], *, legacy: bool = False) -> str:
        """POST /v2/batches/create (legacy: /v1/batches); Bland's batch id, or a DialerError
        as for create_call."""
        path = "/v1/batches" if legacy else "/v2/batches/create"
        try:
            async with asyncio.timeout(self._create_deadline_s):
                response = await self._send("create_batch", "POST", path, json=dict(body))
        except httpx.HTTPError as exc:
            raise classify_transport(exc) from exc
        except TimeoutError as exc:
            raise UnknownOutcomeError(
                f"no complete answer within {self._create_deadline_s:g} s"
            ) from exc
        classify = classify_legacy_batch_create if legacy else classify_batch_create
        return classify(response.status_code, _json(response))

    async def list_batch_calls(self, batch_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """GET /v1/calls?batch_id=: the calls Bland placed for one of its batches."""
        params: dict[str, str | int] = {"batch_id": batch_id, "limit": limit}
        return await self._calls(params)

    async def stop_batch(self, batch_id: str) -> bool:
        """POST /v2/batches/{id}/stop (legacy ids: /v1/batches/{id}/stop); False when unknown."""
        legacy = batch_id.endswith("-gen-batch")
        path = f"/v1/batches/{batch_id}/stop" if legacy else f"/v2/batches/{batch_id}/stop"
        response = await self._read("stop_batch", "POST", path)
        if response.status_code in (400, 404):
            return False
        classify_read(response.status_code, _json(response))
        return True

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
        return await self._calls(params)

    async def _calls(self, params: dict[str, str | int]) -> list[dict[str, Any]]:
        """GET /v1/calls with these filters: the call objects of the page."""
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
