"""`BatchRounds`: open batch requests settled (batch.completed) once every recipient is final."""

from __future__ import annotations

import structlog

from service.clock import Clock, utcnow
from service.ledger import Ledger
from service.metrics import Metrics
from service.periodic import Periodic
from service.settings import Settings

log = structlog.get_logger(__name__)


class BatchRounds(Periodic):
    """Each round: batch.completed for every open batch whose recipients are all final."""

    def __init__(
        self, settings: Settings, ledger: Ledger, metrics: Metrics, *, clock: Clock = utcnow
    ) -> None:
        super().__init__(
            "batch-rounds",
            interval_s=settings.batch_settle_interval_s,
            failed_event="batch_round_failed",
            log=log,
        )
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock

    async def run_once(self) -> list[str]:
        """Settle what is finished; the batch request ids settled."""
        settled = await self.ledger.settle_batches(self.clock())
        for batch_request_id in settled:
            log.info("batch_completed", batch_request_id=batch_request_id)
        return settled
