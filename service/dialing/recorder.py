"""`QueuedRecorder`: Bland's answers that arrive together are recorded in one transaction."""

from __future__ import annotations

import asyncio

from service.clock import Clock
from service.ledger import Claim, Ledger, Queued

# Answers arriving within this window share one commit (one fsync on SQLite).
GROUP_WINDOW_S = 0.002
GROUP_MAX = 64


class QueuedRecorder:
    """Group commit of `queued` results: each caller still waits for its own row's commit."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        *,
        window_s: float = GROUP_WINDOW_S,
        max_group: int = GROUP_MAX,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.window_s = window_s
        self.max_group = max_group
        self._waiting: list[tuple[Claim, str, asyncio.Future[Queued]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, claim: Claim, call_id: str) -> Queued:
        """What `Ledger.record_queued` says, once the group holding this answer committed."""
        future: asyncio.Future[Queued] = asyncio.get_running_loop().create_future()
        self._waiting.append((claim, call_id, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="queued-recorder")
        return await future

    async def _write_groups(self) -> None:
        """Until nothing waits: gather a group (the window, or while a commit runs), write it."""
        while self._waiting:
            if len(self._waiting) < self.max_group:
                await asyncio.sleep(self.window_s)
            group = self._waiting[: self.max_group]
            del self._waiting[: self.max_group]
            try:
                results = await self.ledger.record_queued_many(
                    [(claim, call_id) for claim, call_id, _ in group], self.clock()
                )
            except Exception as exc:  # each caller decides (the dispatcher retries, then gives up)
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
