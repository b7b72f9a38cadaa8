"""The sandbox clock: wall-clock timestamps, simulated waits shortened by a speed factor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class Clock:
    """Real UTC time for timestamps; simulated seconds pass `speed` times faster."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def real_s(self, simulated_s: float) -> float:
        """Real seconds that `simulated_s` simulated seconds take."""
        return max(0.0, simulated_s) / self.speed

    async def sleep(self, simulated_s: float) -> None:
        """Wait for `simulated_s` simulated seconds."""
        await asyncio.sleep(self.real_s(simulated_s))

    async def sleep_until(self, moment: datetime) -> None:
        """Wait until `moment`, the remaining interval shortened by the speed factor."""
        await self.sleep((moment - self.now()).total_seconds())
