"""The sandbox's in-memory store: calls, batches, slots and counters."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.outcomes import Outcome


@dataclass
class SimCall:
    """One call the sandbox accepted, and where it is in its lifecycle."""

    call_id: str
    phone_number: str
    body: dict[str, Any]
    outcome: Outcome
    created_at: datetime
    start_at: datetime | None = None
    batch_id: str | None = None
    from_number: str = "+15550000000"
    queue_status: str = "new"
    status: str = "queued"
    completed: bool = False
    answered_by: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    end_at: datetime | None = None
    talk_s: float = 0.0
    price: float | None = None
    call_ended_by: str | None = None
    final_kind: str | None = None
    response_dropped: bool = False
    holds_slot: bool = False


@dataclass
class BatchRecord:
    """A v2 or legacy batch and its progress."""

    batch_id: str
    version: str  # "v2" or "v1"
    body: dict[str, Any]
    created_at: datetime
    call_ids: list[str] = field(default_factory=list)
    status: str = "validating"
    stopped: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)
    status_webhook: str | None = None


class Slots:
    """Concurrency slots handed over in FIFO order; tracks the high-water mark."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.active = 0
        self.max_active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot now if one is free."""
        if self.cap is not None and self.active >= self.cap:
            return False
        self._take()
        return True

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one."""
        if not self._waiters and self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as we were cancelled: give it back
            raise

    def release(self) -> None:
        """Free a slot, handing it straight to the next waiter if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves over; `active` is unchanged
                return
        self.active -= 1

    def _take(self) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)


@dataclass
class Store:
    """Everything the sandbox remembers; `reset` is a fresh instance."""

    calls: dict[str, SimCall] = field(default_factory=dict)
    batches: dict[str, BatchRecord] = field(default_factory=dict)
    last_by_number: dict[str, datetime] = field(default_factory=dict)
    created_times: deque[datetime] = field(default_factory=deque)
    rejected: Counter[str] = field(default_factory=Counter)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def note_attempt(
        self,
        at: datetime,
        outcome: str,
        status_code: int | None,
        phone_number: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Remember one POST /v1/calls and what became of it (`queued`, `dropped`, or why not)."""
        if outcome not in {"queued", "dropped"}:
            self.rejected[outcome] += 1
        self.attempts.append(
            {
                "at": at.isoformat(),
                "outcome": outcome,
                "status_code": status_code,
                "phone_number": phone_number,
                "call_id": call_id,
            }
        )

    def counts(self) -> dict[str, Any]:
        """Calls recorded per phone number and in total."""
        by_number = Counter(call.phone_number for call in self.calls.values())
        return {
            "total": len(self.calls),
            "by_number": dict(by_number),
            "rejected": dict(self.rejected),
        }
