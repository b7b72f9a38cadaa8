"""The lifecycle scheduler: admits calls, runs each one on the clock, fires its webhook."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from sandbox import plans
from sandbox.calls import render
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.faults import Faults, webhook_duplicated, webhook_lost
from sandbox.outcomes import Shares, choose_outcome
from sandbox.state import SimCall, Slots, Store
from sandbox.webhooks import WebhookSender


class Rejected(Exception):  # noqa: N818 - a decision, not a failure of the sandbox
    """A call refused with an HTTP status and Bland's message."""

    def __init__(self, status_code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.reason = reason


@dataclass
class Simulator:
    """Holds the store and runs every call's lifecycle as an asyncio task."""

    config: SandboxConfig
    client: httpx.AsyncClient
    clock: Clock = field(init=False)
    rng: random.Random = field(init=False)
    fault_rng: random.Random = field(init=False)
    store: Store = field(init=False)
    slots: Slots = field(init=False)
    faults: Faults = field(init=False)
    shares: Shares = field(init=False)
    sender: WebhookSender = field(init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(init=False, default_factory=dict)
    _background: set[asyncio.Task[Any]] = field(init=False, default_factory=set)
    _stopping: set[str] = field(init=False, default_factory=set)
    posts_in_flight: int = field(init=False, default=0)  # POST /v1/calls not answered yet
    max_live_calls: int = field(init=False, default=0)  # high-water mark of live_calls
    _faults_changed: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.clock = Clock(self.config.clock_speed)
        self.faults = self.config.faults
        self.shares = self.config.shares
        self.sender = WebhookSender(
            self.client, self.config.webhook_secret, self.config.webhook_retry_delay_s
        )
        self._fresh()

    def _fresh(self) -> None:
        seed = self.config.seed
        self.rng = random.Random(seed)
        self.fault_rng = random.Random(None if seed is None else seed + 1)
        self.store = Store()
        self.slots = Slots(self.config.plan.max_concurrent)
        self.max_live_calls = 0
        self.sender.log = []

    def change_faults(self, faults: Faults) -> None:
        """New fault knobs; requests waiting out a latency look at them again."""
        self.faults = faults
        self._faults_changed.set()
        self._faults_changed = asyncio.Event()

    async def faults_change(self) -> None:
        """Return when the fault knobs change next."""
        await self._faults_changed.wait()

    @property
    def live_calls(self) -> int:
        """Calls whose lifecycle is still running."""
        return len(self._tasks)

    @property
    def pending_webhooks(self) -> int:
        """Webhook work not finished yet (waiting, sending or retrying)."""
        return len(self._background)

    async def reset(self) -> None:
        """Forget everything: cancel every running call and webhook, clear the store."""
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._background.clear()
        self._stopping.clear()
        self.change_faults(self.config.faults)
        self.shares = self.config.shares
        self._fresh()

    def admit(
        self, phone_number: str, now: datetime, *, check_rate: bool = True, immediate: bool = True
    ) -> bool:
        """Apply the 10-second rule and the plan caps; True when a slot was taken now."""
        last = self.store.last_by_number.get(phone_number)
        if check_rate and plans.same_number_blocked(last, now, self.config.same_number_window_s):
            raise Rejected(429, plans.SAME_NUMBER_MESSAGE, "same_number")
        if check_rate and plans.over_rate_caps(self.config.plan, self.store.created_times, now):
            raise Rejected(429, plans.RATE_LIMIT_MESSAGE, "rate_cap")
        if immediate and self.config.concurrency_mode == "reject":
            if not self.slots.try_acquire():
                raise Rejected(429, plans.RATE_LIMIT_MESSAGE, "concurrency")
            return True
        return False

    def place(
        self,
        phone_number: str,
        body: dict[str, Any],
        now: datetime,
        *,
        start_at: datetime | None = None,
        batch_id: str | None = None,
        holds_slot: bool = False,
        call_id: str | None = None,
    ) -> SimCall:
        """Record an admitted call and start its lifecycle."""
        call = SimCall(
            call_id=call_id or str(uuid.uuid4()),
            phone_number=phone_number,
            body=body,
            outcome=choose_outcome(self.rng, self.shares, self.config.durations),
            created_at=now,
            start_at=start_at if start_at is not None and start_at > now else None,
            batch_id=batch_id,
            holds_slot=holds_slot,
        )
        self.store.calls[call.call_id] = call
        self.store.last_by_number[phone_number] = now
        self.store.created_times.append(now)
        while self.store.created_times and now - self.store.created_times[0] >= plans.DAY:
            self.store.created_times.popleft()
        self._tasks[call.call_id] = asyncio.create_task(self._run(call))
        self.max_live_calls = max(self.max_live_calls, self.live_calls)
        return call

    async def _run(self, call: SimCall) -> None:
        try:
            if call.start_at is not None:
                await self.clock.sleep_until(call.start_at)
                call.holds_slot = call.holds_slot or (
                    self.config.concurrency_mode == "reject" and self.slots.try_acquire()
                )
            call.queue_status = "queued"
            await self.clock.sleep(self.config.durations.queue_s)
            if not call.holds_slot:
                await self.slots.acquire()
                call.holds_slot = True
            call.queue_status = "allocated"
            await self.clock.sleep(call.outcome.ring_s)
            if call.outcome.talk_s > 0:
                call.queue_status, call.status = "started", "in-progress"
                call.started_at = self.clock.now()
                call.answered_by = call.outcome.answered_by
                await self.clock.sleep(self._talk_s(call))
            self._finish(call, call.outcome.kind, self._talk_s(call), ended_by="ASSISTANT")
        except asyncio.CancelledError:
            if call.completed or call.call_id not in self._stopping:
                raise  # reset or shutdown, not a stop request
            self._stopping.discard(call.call_id)
            self._finish_stopped(call)
        self._tasks.pop(call.call_id, None)
        self.spawn(self._post_call_webhook(call))

    def _talk_s(self, call: SimCall) -> float:
        max_duration = call.body.get("max_duration", 30)
        cap_s = float(max_duration) * 60 if isinstance(max_duration, int | float) else 1800.0
        return min(call.outcome.talk_s, cap_s)

    def _finish_stopped(self, call: SimCall) -> None:
        if call.started_at is not None:
            talked = (self.clock.now() - call.started_at).total_seconds() * self.clock.speed
            self._finish(call, call.outcome.kind, min(talked, self._talk_s(call)), "USER")
        else:
            self._finish(call, "canceled", 0.0, ended_by=None)

    def _finish(self, call: SimCall, kind: str, talk_s: float, ended_by: str | None) -> None:
        outcome = call.outcome
        now = self.clock.now()
        call.final_kind = kind
        call.completed = True
        call.queue_status = "complete"
        call.end_at = now
        call.call_ended_by = ended_by
        if kind == "canceled":
            call.status, call.answered_by, call.error_message = "canceled", None, None
        else:
            call.status, call.answered_by = outcome.status, outcome.answered_by
            call.error_message = outcome.error_message
        call.talk_s = round(talk_s) if talk_s > 0 else 0.0
        call.price = plans.price_usd(self.config.plan, call.talk_s) if kind != "canceled" else 0.0
        if call.holds_slot:
            call.holds_slot = False
            self.slots.release()

    def stop(self, call_id: str) -> bool:
        """End a live call or cancel a waiting one; False when it is unknown or finished."""
        call = self.store.calls.get(call_id)
        task = self._tasks.get(call_id)
        if call is None or call.completed or task is None:
            return False
        self._stopping.add(call_id)
        task.cancel()
        return True

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a background coroutine that `reset` can cancel."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_call_webhook(self, call: SimCall) -> None:
        url = call.body.get("webhook")
        if not isinstance(url, str) or not url:
            return
        ids = {"call_id": call.call_id, "batch_id": call.batch_id}
        if webhook_lost(self.fault_rng, self.faults):
            self.sender.lost("call", url, ids)
            return
        await self.clock.sleep(self.faults.webhook_delay_s)
        payload = render(call)
        copies = 2 if webhook_duplicated(self.fault_rng, self.faults) else 1
        for _ in range(copies):
            await self.sender.deliver(
                "call",
                url,
                payload,
                retries=self.faults.webhook_retries,
                timeout_s=self.config.webhook_timeout_s,
                ids=ids,
            )

    async def batch_webhook(
        self,
        kind: str,
        url: str,
        batch_id: str,
        payload: dict[str, Any],
        *,
        retries: int,
        timeout_s: float,
    ) -> None:
        """POST a batch webhook, unless the fault injection loses it."""
        ids = {"batch_id": batch_id, "call_id": None}
        if webhook_lost(self.fault_rng, self.faults):
            self.sender.lost(kind, url, ids)
            return
        await self.sender.deliver(kind, url, payload, retries=retries, timeout_s=timeout_s, ids=ids)

    async def wait_finished(self, call_ids: list[str]) -> None:
        """Wait until every listed call has completed."""
        tasks = [self._tasks[cid] for cid in call_ids if cid in self._tasks]
        if tasks:
            await asyncio.wait(tasks)
