"""`Periodic`: a background task that runs rounds until stopped, and its waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Any


async def sleep_until(event: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


async def finish(task: asyncio.Task[None] | None, grace_s: float) -> None:
    """Let `task` finish within grace_s, then cancel it."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic(ABC):
    """Runs `run_once` every `interval_s` until stopped; `failures` counts failed rounds in a row.

    A subclass with its own pacing overrides `_loop` and waits with `_sleep`.
    """

    def __init__(self, name: str, *, interval_s: float, failed_event: str, log: Any) -> None:
        self.failures = 0
        self._name = name
        self._interval_s = interval_s
        self._failed_event = failed_event
        self._log = log  # the subclass's module logger, so its lines keep their logger name
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def run_once(self) -> object:
        """One round; an exception counts as a failed round."""

    async def start(self) -> None:
        """Start the rounds."""
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self, grace_s: float) -> None:
        """Finish the round in progress within grace_s."""
        self._stopping.set()
        await finish(self._task, grace_s)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
                self.failures = 0
            except Exception as exc:  # the ledger is down: try again next round
                self.failures += 1
                self._log.warning(self._failed_event, error=str(exc), failures=self.failures)
            await self._sleep(self._interval_s)

    async def _sleep(self, seconds: float) -> None:
        await sleep_until(self._stopping, seconds)
