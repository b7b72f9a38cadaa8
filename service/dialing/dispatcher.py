"""`Dispatcher`: claim due requests in the ledger, POST them to Bland, record what happened."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

import structlog

from service.backoff import Backoff, Uniform
from service.bland.client import BlandClient
from service.clock import Clock, utcnow
from service.dialing.admission import admit, settings_limits
from service.dialing.batches import BatchSender, Coalescer
from service.dialing.compliance import rules_from, screen_round
from service.dialing.decisions import DialResult
from service.dialing.results import ROUND_RETRY_MAX_S, DialResults, StopCanceled, call_body
from service.ledger import (
    Accepted,
    Claim,
    Ledger,
    Limits,
    NewCall,
    Outcome,
    OutcomeResult,
)
from service.ledger.records import Candidate, NumberFacts, Screened
from service.metrics import Metrics
from service.periodic import sleep_until
from service.settings import Settings

log = structlog.get_logger(__name__)

# All slots taken: a settled webhook wakes this process at once, so rounds can be rare; a slot
# freed otherwise (another replica's poll, a lease) is still found within this.
FULL_IDLE_S = 0.5


def default_owner() -> str:
    """A claim owner unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """The dial loop: claim (attempt committed first) → POST → record; never dials twice."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        owner: str | None = None,
        draw: Uniform = random.random,
        stop_canceled: StopCanceled | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.owner = owner or default_owner()
        # Tells the outbox relay that events were committed (else it finds them at its next poll).
        self.on_events = on_events or (lambda: None)
        self.results = DialResults(
            settings, ledger, bland, metrics, clock=clock, draw=draw,
            stop_canceled=stop_canceled, on_events=self.on_events,
        )  # fmt: skip
        self.failures = 0  # consecutive rounds the ledger failed
        self.rounds = 0  # claim rounds completed: evidence that the loop has moved on
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[DialResult]] = set()
        self._reserved = 0  # connections counted as taken by claims being written
        self._room_freed = asyncio.Event()  # a reservation ended since the round began
        self._task: asyncio.Task[None] | None = None
        self.rules = rules_from(settings)
        metrics.concurrency_cap.set(settings.max_concurrent_calls)
        self.batches = BatchSender(
            settings, ledger, bland, metrics, clock=clock,
            body=lambda claim: call_body(claim, settings.webhook_url),
            record_failure=self.results.record,
        )  # fmt: skip
        self.coalescer = (
            Coalescer(settings.coalesce_window_s, self.batches.send, self._track)
            if settings.coalesce_window_s > 0
            else None
        )

    def screen(
        self,
        candidates: Sequence[Candidate],
        facts: Mapping[str, NumberFacts],
        now: datetime,
        wanted: int,
    ) -> list[Screened]:
        """The compliance screen of one claim round (pure; run inside the ledger's transaction)."""
        return screen_round(candidates, facts, self.rules, now, wanted)

    @property
    def clock(self) -> Clock:
        """The clock, shared with the results (a test may swap it)."""
        return self.results.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.results.clock = clock

    @property
    def problem(self) -> str | None:
        """Set while Bland refuses our account."""
        return self.results.problem

    @property
    def pace(self) -> float:
        """The shared pace read in the last round (Bland's 429s lower it)."""
        return self.results.pace

    def _limits(self, limit: int) -> Limits:
        return settings_limits(self.settings, owner=self.owner, limit=limit, pace=self.pace)

    @property
    def ready(self) -> bool:
        """False while Bland refuses our account or the ledger cannot be read."""
        return self.problem is None and self.failures == 0

    @property
    def in_flight(self) -> int:
        """POSTs to Bland not answered yet."""
        return len(self._inflight)

    def wake(self) -> None:
        """Look for due requests now (the consumer accepted some)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the dial loop."""
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let POSTs in flight finish within grace_s.

        A POST still unanswered at the deadline is abandoned: its row stays `dialing` and the
        reconciler's sweep turns it into `unknown` later; it is never dialed again blindly.
        """
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if not self._inflight:
            return
        _, pending = await asyncio.wait(self._inflight, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("dispatcher_stopped_with_calls_in_flight", abandoned=len(pending))
            await asyncio.wait(pending)

    async def join(self) -> None:
        """Wait until every POST in flight is answered and recorded."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def accept(self, calls: Sequence[NewCall], now: datetime) -> list[Accepted]:
        """Write new requests and claim what is due in the same transaction, then POST at once.

        One durable commit before the POST (DESIGN section 1). While the dial loop is not
        running, is stopping or holds (Bland throttles or refuses the account), they are
        only written.
        """
        room = self._claim_room()
        if room <= 0:
            accepted = await self.ledger.accept_calls(calls, now)
            self.on_events()
            self.wake()
            return accepted
        with self._reserving(room):
            accepted, claims, admission = await self.ledger.accept_and_claim(
                calls, now, self._limits(room), admit, self.screen
            )
            self.submit(claims)
        self.results.observe(admission)
        self.on_events()
        return accepted

    async def settle(
        self, outcome: Outcome, now: datetime, *, request_id: str | None = None
    ) -> OutcomeResult:
        """Record an outcome; the slot it frees goes to the next due request in the same commit.

        One request per outcome (the one slot freed), never one for Bland's batch API (those
        go out in the dial loop's rounds, many to a batch); anything more is the loop's.
        """
        room = min(1, self._claim_room())
        if room <= 0:
            recorded = await self.ledger.record_outcome(outcome, now, request_id=request_id)
            claims: list[Claim] = []
        else:
            with self._reserving(room):
                recorded, claims, admission = await self.ledger.settle_and_claim(
                    outcome, now, self._limits(room), admit, self.screen, request_id=request_id
                )
                self.submit(claims)
            if recorded.changed:
                self.results.observe(admission)
        if recorded.changed:
            self.on_events()
            if len(claims) < room or room == 0:
                self.wake()
        return recorded

    @contextmanager
    def _reserving(self, room: int) -> Iterator[None]:
        """Count `room` as taken while a claim is written, until its POSTs are tracked.

        Claims made at once (the loop, intake, outcomes) never exceed the free connections:
        a POST waiting for a connection could outlast the stale-claim sweep.
        """
        self._reserved += room
        try:
            yield
        finally:
            self._reserved -= room
            self._room_freed.set()

    def _claim_room(self) -> int:
        """Claims a write outside the loop may make now: none while stopped, stopping or held."""
        running = self._task is not None and not self._task.done()
        held = self._stopping.is_set() or time.monotonic() < self.results.hold_until
        return self._room_now() if running and not held else 0

    async def _loop(self) -> None:
        retry = Backoff(0.2, ROUND_RETRY_MAX_S)
        while not self._stopping.is_set():
            try:
                claimed, full = await self.run_once()
            except Exception as exc:  # fail closed: nobody is dialed while the ledger is down
                self.failures += 1
                log.warning("dispatch_round_failed", error=str(exc), failures=self.failures)
                await self._idle(retry.next_s())
                continue
            retry.reset()
            self.failures = 0
            self.rounds += 1
            if not full:
                await self._idle(self._idle_s())
            elif claimed == 0:
                await self._await_room()

    def _idle_s(self) -> float:
        """Rounds every dispatch_idle_s; rarer while every slot is taken (wakes come then)."""
        if self.results.held_by == "concurrency":
            return max(self.settings.dispatch_idle_s, FULL_IDLE_S)
        return self.settings.dispatch_idle_s

    async def _idle(self, seconds: float) -> None:
        hold_s = self.results.hold_until - time.monotonic()
        await sleep_until(self._wake, max(seconds, hold_s))
        self._wake.clear()

    async def _await_room(self) -> None:
        """Every connection is busy or reserved: wait for a POST or a claim to finish (or stop)."""
        waits = {asyncio.ensure_future(e.wait()) for e in (self._stopping, self._room_freed)}
        try:
            await asyncio.wait({*self._inflight, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _room_now(self) -> int:
        room = self.settings.bland_pool_size - len(self._inflight) - self._reserved
        return min(self.settings.dispatch_batch_size, room)

    async def run_once(self) -> tuple[int, bool]:
        """Claim one round and start its POSTs; (claimed, whether more may be due right now)."""
        if time.monotonic() < self.results.hold_until:
            return 0, False
        self._room_freed.clear()  # a claim elsewhere that ends from here on ends _await_room
        limit = self._room_now()
        if limit <= 0:
            return 0, True
        with self._reserving(limit):
            claims, admission = await self.ledger.claim_due(
                self.clock(), self._limits(limit), admit, self.screen
            )
            self.submit(claims)
        self.results.observe(admission)
        return len(claims), len(claims) == limit and admission.limited_by is None

    def submit(self, claims: Sequence[Claim]) -> None:
        """Start the POSTs of claims (recipients of `bland` dispatch: in Bland batches)."""
        handed = [claim for claim in claims if claim.dispatch == "bland"]
        if handed:
            self._track(asyncio.create_task(self.batches.send(handed), name="bland-batch"))
        singles = [claim for claim in claims if claim.dispatch != "bland"]
        if self.coalescer is not None and singles:
            self.coalescer.add(singles)
            return
        for claim in singles:
            self._track(asyncio.create_task(self.dial(claim), name=f"dial-{claim.request_id}"))

    def _track(self, task: asyncio.Task[DialResult]) -> None:
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def dial(self, claim: Claim) -> DialResult:
        """POST one claimed request and record the result; returns the `calls_dialed` label."""
        return await self.results.dial(claim)
