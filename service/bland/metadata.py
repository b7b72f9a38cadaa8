"""Our request id in a call's `metadata`: written into every body, read back from Bland's answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Bland echoes `metadata` on every call, answered or not: it is how a call is matched to its
# request (webhooks, polls, reconciliation). List Calls cannot filter on it.
REQUEST_ID_KEY = "dialer_request_id"


def with_request_id(body: Mapping[str, Any], request_id: str) -> dict[str, Any]:
    """The body with our request id in `metadata`; the publisher's keys are kept, ours wins."""
    out = dict(body)
    metadata = out.get("metadata")
    merged = dict(metadata) if isinstance(metadata, Mapping) else {}
    merged[REQUEST_ID_KEY] = request_id
    out["metadata"] = merged
    return out


def request_id_in(metadata: object) -> str | None:
    """Our request id as echoed in a call's metadata, if present."""
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(REQUEST_ID_KEY)
    return value if isinstance(value, str) and value else None
