"""`LedgerRounds`: periodic rounds over the ledger that ask Bland (the poller, the reconciler)."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import structlog

from service.bland.client import BlandClient
from service.clock import Clock, utcnow
from service.ledger import Ledger
from service.metrics import Metrics
from service.outcomes.settlement import RecordOutcome
from service.periodic import Periodic
from service.settings import Settings


class LedgerRounds(Periodic):
    """A Periodic with the ledger, Bland, the metrics and the clock at hand."""

    round_name: ClassVar[str]
    failed_event: ClassVar[str]
    default_batch_size: ClassVar[int]

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        batch_size: int | None = None,
        record: RecordOutcome | None = None,
    ) -> None:
        super().__init__(
            self.round_name,
            interval_s=self.interval_s(settings),
            failed_event=self.failed_event,
            log=structlog.get_logger(type(self).__module__),
        )
        self.settings = settings
        self.ledger = ledger
        # How an outcome is recorded: the dispatcher's hands the freed slot on at once.
        self.record = record or ledger.record_outcome
        self.bland = bland
        self.metrics = metrics
        self.clock = clock
        self.batch_size = batch_size or self.default_batch_size

    @staticmethod
    @abstractmethod
    def interval_s(settings: Settings) -> float:
        """Seconds between rounds."""
