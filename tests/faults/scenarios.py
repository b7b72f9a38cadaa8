"""Scenarios run once each, possibly side by side, and read by several tests.

A test module declares its scenarios; a test names the one it reads with a marker and gets its
outcome through the `outcome` fixture:

    KILL = Scenario("kill -9 x20 (sqlite)", kill_run)

    @pytest.mark.scenario(KILL)
    def test_nothing_lost(outcome: KillRun) -> None: ...

At the first test, every scenario that a selected test names is started on a background
event loop, `DIALER_FAULTS_WORKERS` (default 2) at a time, the longest first. The work is mostly
waiting (restarts, partitions held, grace periods), so two scenarios side by side finish the
suite much sooner on two cores. A scenario marked `exclusive` (it restarts the shared private
broker) runs alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.rig import Collector, Rig
from tests.support.rabbitnode import RabbitNode

WORKERS_ENV = "DIALER_FAULTS_WORKERS"


@dataclass(frozen=True, eq=False)
class Scenario:
    """A named body run with a fresh Rig; `exclusive` ones run with nothing beside them."""

    name: str
    body: Callable[[Rig], Awaitable[Any]]
    exclusive: bool = False
    weight_s: float = 30.0  # a rough duration: the longest start first
    rig_options: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return id(self)


def workers() -> int:
    """How many scenarios may run at once."""
    return max(1, int(os.environ.get(WORKERS_ENV, "2")))


class Runner:
    """A background event loop running scenarios with a concurrency limit."""

    def __init__(
        self,
        node: RabbitNode,
        collector: Collector,
        make_dir: Callable[[str], Path],
        limit: int,
    ) -> None:
        self.node = node
        self.collector = collector
        self.make_dir = make_dir
        self.limit = limit
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="faults-scenarios", daemon=True
        )
        self.thread.start()
        self.futures: dict[Scenario, concurrent.futures.Future[Any]] = {}
        self.timings: dict[str, tuple[float, float]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._exclusive: asyncio.Lock | None = None

    def submit_all(self, scenarios: list[Scenario]) -> None:
        """Start these scenarios, `limit` at a time: exclusive ones first (nothing to wait
        for), then the longest first (the suite ends sooner)."""
        for scenario in sorted(scenarios, key=lambda s: (not s.exclusive, -s.weight_s)):
            if scenario not in self.futures:
                self.futures[scenario] = asyncio.run_coroutine_threadsafe(
                    self._run(scenario), self.loop
                )

    def result(self, scenario: Scenario, timeout_s: float | None = None) -> Any:
        """Block until the scenario finished; its outcome, or its exception."""
        self.submit_all([scenario])
        return self.futures[scenario].result(timeout=timeout_s)

    def wait_all(self, timeout_s: float = 1800) -> None:
        """Block until every submitted scenario finished (whatever its result)."""
        for future in list(self.futures.values()):
            with contextlib.suppress(BaseException):
                future.result(timeout=timeout_s)

    async def _gates(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        if self._slots is None or self._exclusive is None:
            self._slots = asyncio.Semaphore(self.limit)
            self._exclusive = asyncio.Lock()
        return self._slots, self._exclusive

    async def _run(self, scenario: Scenario) -> Any:
        slots, exclusive = await self._gates()
        needed = self.limit if scenario.exclusive else 1
        async with exclusive:  # slots are taken all at once, in submission order
            for _ in range(needed):
                await slots.acquire()
        started = time.monotonic()
        try:
            work_dir = await asyncio.to_thread(self.make_dir, scenario.name)
            async with Rig(
                self.node, scenario.name, work_dir, self.collector, **scenario.rig_options
            ) as rig:
                return await scenario.body(rig)
        finally:
            self.timings[scenario.name] = (started, time.monotonic())
            for _ in range(needed):
                slots.release()

    def close(self) -> None:
        """Wait for what is running, cancel what never started, stop the loop."""
        for future in self.futures.values():
            future.cancel()
        for future in self.futures.values():
            with contextlib.suppress(BaseException):
                future.result(timeout=600)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
