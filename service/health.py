"""`Health`: what /readyz reports: the database, the broker, the consumer, a shutdown."""

from __future__ import annotations

import asyncio
from typing import Protocol

from service.ledger import Ledger
from service.logs import mask_text

PING_TIMEOUT_S = 2.0
# A round trip unanswered this long is left behind (its link's failure will end it) and a
# new one is asked, so that a lost frame cannot keep the service "not ready" forever.
PROBE_ABANDON_S = 60.0


class Publishing(Protocol):
    """What readiness reads of the outbox relay."""

    @property
    def ready(self) -> bool:
        """Connected, and the last round did not fail."""

    async def ping(self) -> None:
        """A round trip to the broker; raises when the link fails."""


class Consuming(Publishing, Protocol):
    """What readiness reads of the request consumer."""

    @property
    def paused(self) -> bool:
        """Waiting for the database."""


class Health:
    """Readiness checks; the app marks parts waiting to start and the shutdown."""

    def __init__(self, ledger: Ledger, consumer: Consuming, relay: Publishing) -> None:
        self.ledger = ledger
        self.consumer = consumer
        self.relay = relay
        self.waiting: dict[str, str] = {}  # part -> why it is not started yet
        self.started: set[str] = set()  # parts started at least once
        self.stopping = False
        self._probe: asyncio.Future[None] | None = None  # the round trip in flight, if any
        self._probe_since = 0.0

    def close(self) -> None:
        """Drop a round trip still in flight (at shutdown)."""
        if self._probe is not None:
            self._probe.cancel()

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
        checks["broker"] = await self._broker()
        checks["consumers"] = self._consumer()
        return checks

    async def _broker(self) -> str:
        if "broker" in self.waiting:
            return self.waiting["broker"]
        consumer_up = "consumer" in self.started and self.consumer.ready
        relay_up = "relay" in self.started and self.relay.ready
        if not (consumer_up or relay_up):
            return "not connected" if "relay" in self.started else "not connected yet"
        return await self._round_trip(self.consumer if consumer_up else self.relay)

    async def _round_trip(self, part: Publishing) -> str:
        """A black-holed link looks connected until heartbeats give up: ask the broker.

        One round trip at a time, never cancelled (aiormq closes a channel whose RPC is
        cancelled): a probe still unanswered after PING_TIMEOUT_S means not ready.
        """
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._probe_since > PROBE_ABANDON_S
        if self._probe is None or self._probe.done() or stale:
            self._probe = asyncio.ensure_future(part.ping())
            self._probe_since = loop.time()
        probe = self._probe
        done, _ = await asyncio.wait({probe}, timeout=PING_TIMEOUT_S)
        if not done:
            return f"not answering (no reply for {loop.time() - self._probe_since:.0f} s)"
        failure = probe.exception()
        return "ok" if failure is None else f"not answering ({type(failure).__name__})"

    def _consumer(self) -> str:
        if "consumer" not in self.started:
            return "not started"
        if self.consumer.ready:
            return "ok"
        return "paused: the database is unavailable" if self.consumer.paused else "not consuming"
