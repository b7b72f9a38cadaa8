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


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    """Ours carry x-dialer-* headers; the broker's (delivery limit) carry x-first-death-*."""
    headers: dict[str, Any] = dict(message.headers or {})
    reason = headers.get("x-dialer-reason") or headers.get("x-first-death-reason") or "unknown"
    return DeadLetter(
        reason=str(reason),
        request_id=str(headers.get("x-dialer-request-id") or message.message_id or "") or None,
        routing_key=original_routing_key(message),
        error=str(headers["x-dialer-error"]) if headers.get("x-dialer-error") else None,
        size=len(message.body),
        replays=int(headers.get(REPLAYS_HEADER, 0) or 0),
    )


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the publisher used."""
    headers = message.headers or {}
    return str(headers.get("x-dialer-routing-key") or message.routing_key or "")


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
