"""The service's intake and events out, built by the composition root: consumer, relay, a tap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.requests import RequestConsumer
from service.composition import Parts, assemble
from service.ledger import Ledger
from service.ledger.migrate import upgrade
from service.ledger.tables import requests
from service.metrics import Metrics
from service.settings import Settings
from tests.support.bus import Tap


@dataclass
class Stack:
    """The service's consumer and relay (from the composition root) and a tap on the events."""

    parts: Parts
    tap: Tap

    @property
    def settings(self) -> Settings:
        """The settings the parts were built with."""
        return self.parts.settings

    @property
    def ledger(self) -> Ledger:
        """The ledger."""
        return self.parts.ledger

    @property
    def metrics(self) -> Metrics:
        """The metrics."""
        return self.parts.metrics

    @property
    def consumer(self) -> RequestConsumer:
        """The request consumer."""
        return self.parts.consumer

    async def rows(self) -> list[Any]:
        """Every ledger row."""
        async with self.ledger.engine.connect() as conn:
            return list((await conn.execute(select(requests))).all())

    async def wait_rows(self, n: int, timeout_s: float = 10.0) -> list[Any]:
        """The ledger rows once there are at least n."""
        for _ in range(int(timeout_s / 0.02)):
            rows = await self.rows()
            if len(rows) >= n:
                return rows
            await asyncio.sleep(0.02)
        raise AssertionError(f"fewer than {n} rows after {timeout_s}s")

    async def close(self) -> None:
        """Stop the consumer and the relay, close the tap, the Bland client and the ledger."""
        await self.consumer.stop(5.0)
        await self.parts.relay.stop(5.0)
        await self.tap.close()
        await self.parts.bland.aclose()
        await self.ledger.close()


async def build_stack(settings: Settings, *, relay: bool = True) -> Stack:
    """Assemble the service on these settings; start its consumer (and relay)."""
    await upgrade(settings)
    parts = await assemble(settings, registry=CollectorRegistry())
    await parts.consumer.start()
    if relay:
        await parts.relay.start()
    return Stack(parts, await Tap.open(settings, f"{settings.prefix}.events"))
