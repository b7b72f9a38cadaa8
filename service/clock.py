"""The clock every part reads: an injectable callable returning aware UTC datetimes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Now, timezone-aware UTC: the default clock."""
    return datetime.now(UTC)
