"""Pure: the shared pace factor that Bland's 429s lower and quiet time restores."""

from __future__ import annotations

from datetime import datetime


def pace_at(factor: float, changed_at: datetime | None, now: datetime, recovery_s: float) -> float:
    """The pace now: it climbs back linearly to 1 over `recovery_s` since the last 429."""
    if changed_at is None or factor >= 1.0:
        return 1.0
    elapsed_s = max(0.0, (now - changed_at).total_seconds())
    return min(1.0, factor + (1.0 - factor) * elapsed_s / recovery_s) if recovery_s > 0 else 1.0


def lowered(pace: float, floor: float) -> float:
    """The pace after another 429: halved, never below the floor."""
    return max(floor, pace / 2.0)
