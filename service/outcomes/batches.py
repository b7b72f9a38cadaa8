"""`BatchRounds`: batch requests settled once every recipient is final; Bland batches looked after."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from service.bland.client import BlandClient
from service.bland.metadata import request_id_in
from service.clock import Clock, utcnow
from service.ledger import Ledger
from service.metrics import Metrics
from service.periodic import Periodic
from service.settings import Settings

log = structlog.get_logger(__name__)


class BatchRounds(Periodic):
    """Each round: batch.completed for finished batches; now and then, Bland's batch calls."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__(
            "batch-rounds",
            interval_s=settings.batch_settle_interval_s,
            failed_event="batch_round_failed",
            log=log,
        )
        self.settings = settings
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self._next_poll = 0.0  # monotonic

    async def run_once(self) -> list[str]:
        """Settle what is finished (and poll Bland's batches when due); the ids settled."""
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.settings.batch_poll_interval_s
            await self.poll_handoffs()
        settled = await self.ledger.settle_batches(self.clock())
        for batch_request_id in settled:
            log.info("batch_completed", batch_request_id=batch_request_id)
        return settled

    async def poll_handoffs(self) -> int:
        """Give handed-off recipients the call ids Bland lists for their batch; how many."""
        adopted = 0
        for bland_batch_id in await self.ledger.handed_off():
            try:
                calls = await self.bland.list_batch_calls(bland_batch_id)
            except Exception as exc:  # Bland unreachable: next round
                log.warning("batch_poll_failed", bland_batch_id=bland_batch_id, error=str(exc))
                continue
            for call in calls:
                adopted += await self._adopt(bland_batch_id, call)
        overdue = await self.ledger.overdue_handoffs(self.clock())
        if adopted or overdue:
            log.info("batch_calls_polled", adopted=adopted, unknown=overdue)
        return adopted

    async def _adopt(self, bland_batch_id: str, call: dict[str, Any]) -> bool:
        call_id = call.get("call_id") or call.get("c_id")
        if not isinstance(call_id, str):
            return False
        request_id = request_id_in(call.get("metadata"))
        if request_id is not None:
            return await self.ledger.adopt_call(request_id, call_id, self.clock())
        # A legacy batch's calls share their metadata: matched by number within the batch.
        number = call.get("to") or call.get("phone_number")
        if not isinstance(number, str):
            return False
        return await self.ledger.adopt_by_number(bland_batch_id, number, call_id, self.clock())

    async def stop_bland(self, bland_batch_ids: Sequence[str]) -> None:
        """Stop Bland batches of a canceled batch request (calls not connected are canceled)."""
        for bland_batch_id in bland_batch_ids:
            stopped = await self.bland.stop_batch(bland_batch_id)
            log.info("bland_batch_stopped", bland_batch_id=bland_batch_id, found=stopped)
