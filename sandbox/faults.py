"""Fault injection knobs and the pure per-request decision."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SERVER_ERROR_MESSAGE = "Error triggering call. Please check your twilio account for errors"
SHARE_KNOBS = (
    "error_5xx_share",
    "rate_limit_429_share",
    "drop_share",
    "webhook_loss_share",
    "read_error_5xx_share",
    "webhook_duplicate_share",
)


class FaultError(ValueError):
    """A bad knob name or value."""


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often (shares are probabilities in [0, 1])."""

    latency_ms: float = 0.0
    error_5xx_share: float = 0.0
    rate_limit_429_share: float = 0.0
    drop_share: float = 0.0
    webhook_loss_share: float = 0.0
    webhook_retries: int = 3
    read_error_5xx_share: float = 0.0
    webhook_delay_s: float = 0.0
    webhook_duplicate_share: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The knobs as JSON."""
        return asdict(self)


def updated(faults: Faults, changes: dict[str, Any]) -> Faults:
    """A copy with some knobs changed; raises ValueError naming a bad knob or value."""
    known = {f.name for f in fields(Faults)}
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in known:
            raise FaultError(f"unknown fault knob: {key}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultError(f"{key} must be a number")
        if key in SHARE_KNOBS and not 0.0 <= value <= 1.0:
            raise FaultError(f"{key} must be between 0 and 1")
        if value < 0:
            raise FaultError(f"{key} must not be negative")
        clean[key] = int(value) if key == "webhook_retries" else float(value)
    return replace(faults, **clean)


def create_fault(rng: random.Random, faults: Faults) -> str | None:
    """The fault for one create request: "5xx" or "429" (nothing recorded), "drop", or None."""
    # One draw per knob in a fixed order keeps a seeded run reproducible.
    roll_5xx, roll_429, roll_drop = rng.random(), rng.random(), rng.random()
    if roll_5xx < faults.error_5xx_share:
        return "5xx"
    if roll_429 < faults.rate_limit_429_share:
        return "429"
    if roll_drop < faults.drop_share:
        return "drop"
    return None


def webhook_lost(rng: random.Random, faults: Faults) -> bool:
    """True when this webhook is silently never sent."""
    return rng.random() < faults.webhook_loss_share


def read_fault(rng: random.Random, faults: Faults) -> bool:
    """True when this read (GET) answers 500."""
    return rng.random() < faults.read_error_5xx_share


def webhook_duplicated(rng: random.Random, faults: Faults) -> bool:
    """True when a delivered webhook is sent a second time."""
    return rng.random() < faults.webhook_duplicate_share
