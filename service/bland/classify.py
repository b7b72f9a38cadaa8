"""Pure classification of Bland's answers into the error tree: what to do next, never I/O."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from service.errors import (
    AccountError,
    DialerError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)

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
      hide a placed call: unknown outcome, settled by the one rule for unknown outcomes
      (redialed only when Bland's list, read after the grace, has no call for the request).
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
