"""Dead letters: the copy we dead-letter with its reason in headers, and reading one back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from service.bus.connection import persistent_copy
from service.logs import mask_text

HEADER_TEXT_MAX = 1000
# Headers about a past death, dropped on replay so the message starts afresh.
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "x-dialer-")
REPLAYS_HEADER = "x-dialer-replays"


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter says about itself."""

    reason: str
    request_id: str | None
    routing_key: str
    error: str | None
    size: int
    replays: int
    message_id: str | None = None
    preview: str = ""


PREVIEW_BYTES = 120


def body_preview(body: bytes) -> str:
    """The body's start as printable text whatever its bytes (invalid UTF-8, control bytes)."""
    shown = _printable(body[:PREVIEW_BYTES].decode("utf-8", "backslashreplace"))
    return shown + ("..." if len(body) > PREVIEW_BYTES else "")


def _printable(text: str) -> str:
    """Control characters escaped, so a dead letter never drives the operator's terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _count(value: Any) -> int:
    """A replay count from a header, 0 when it is absent or not a number."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str:
    """A header value as text (AMQP headers may carry bytes)."""
    if isinstance(value, bytes):
        return _printable(value.decode("utf-8", "backslashreplace"))
    return _printable(str(value))


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    """Ours carry x-dialer-* headers; the broker's (delivery limit) carry x-first-death-*."""
    headers: dict[str, Any] = dict(message.headers or {})
    reason = headers.get("x-dialer-reason") or headers.get("x-first-death-reason") or "unknown"
    request_id = headers.get("x-dialer-request-id") or message.message_id
    return DeadLetter(
        reason=_text(reason),
        request_id=_text(request_id) if request_id else None,
        routing_key=original_routing_key(message),
        error=_text(headers["x-dialer-error"]) if headers.get("x-dialer-error") else None,
        size=len(message.body),
        replays=_count(headers.get(REPLAYS_HEADER)),
        message_id=_text(message.message_id) if message.message_id else None,
        preview=body_preview(message.body),
    )


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the publisher used."""
    headers = message.headers or {}
    return _text(headers.get("x-dialer-routing-key") or message.routing_key or "")


def replay_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The original request again: same body, ids and properties; death headers dropped."""
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(_DEATH_HEADERS)}
    headers[REPLAYS_HEADER] = describe(message).replays + 1
    return persistent_copy(message, headers)


def dead_letter_message(
    message: AbstractIncomingMessage, *, reason: str, error: str, request_id: str
) -> aio_pika.Message:
    """A persistent copy of the delivery with the reason in headers (no expiration, no user_id)."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers.update(
        {
            "x-dialer-reason": reason,
            "x-dialer-error": mask_text(error)[:HEADER_TEXT_MAX],
            "x-dialer-request-id": request_id,
            "x-dialer-routing-key": message.routing_key or "",
            "x-dialer-exchange": message.exchange or "",
        }
    )
    return persistent_copy(message, headers, priority=message.priority)
