"""`Health`: what /readyz reports: the database, the broker, the consumer, a shutdown."""

from __future__ import annotations

import asyncio
from typing import Protocol

from service.ledger import Ledger
from service.logs import mask_text

PING_TIMEOUT_S = 2.0


class Consuming(Protocol):
    """What readiness reads of the request consumer."""

    @property
    def ready(self) -> bool:
        """Consuming, connected, not paused."""

    @property
    def paused(self) -> bool:
        """Waiting for the database."""


class Publishing(Protocol):
    """What readiness reads of the outbox relay."""

    @property
    def ready(self) -> bool:
        """Connected, and the last round did not fail."""


class Health:
    """Readiness checks; the app marks parts waiting to start and the shutdown."""

    def __init__(self, ledger: Ledger, consumer: Consuming, relay: Publishing) -> None:
        self.ledger = ledger
        self.consumer = consumer
        self.relay = relay
        self.waiting: dict[str, str] = {}  # part -> why it is not started yet
        self.started: set[str] = set()  # parts started at least once
        self.stopping = False

    async def checks(self) -> dict[str, str]:
        """database, broker, consumers: "ok" or what is wrong (ready when all say "ok")."""
        checks: dict[str, str] = {}
        if self.stopping:
            checks["shutdown"] = "in progress"
        try:
            await asyncio.wait_for(self.ledger.ping(), PING_TIMEOUT_S)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means: not ready, and say why
            checks["database"] = mask_text(str(exc)) or type(exc).__name__
        checks["broker"] = self._broker()
        checks["consumers"] = self._consumer()
        return checks

    def _broker(self) -> str:
        if "broker" in self.waiting:
            return self.waiting["broker"]
        consumer_up = "consumer" in self.started and self.consumer.ready
        relay_up = "relay" in self.started and self.relay.ready
        if consumer_up or relay_up:
            return "ok"
        return "not connected" if "relay" in self.started else "not connected yet"

    def _consumer(self) -> str:
        if "consumer" not in self.started:
            return "not started"
        if self.consumer.ready:
            return "ok"
        return "paused: the database is unavailable" if self.consumer.paused else "not consuming"
