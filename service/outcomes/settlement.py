"""Recording an outcome learned from Bland, counted once when it settles the request."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Protocol

from service.ledger import Outcome, OutcomeResult
from service.metrics import Metrics


class RecordOutcome(Protocol):
    """`Ledger.record_outcome`, or the dispatcher's (which hands the freed slot on at once)."""

    def __call__(
        self, outcome: Outcome, now: datetime, *, request_id: str | None = None
    ) -> Awaitable[OutcomeResult]: ...


async def settle(
    record: RecordOutcome,
    metrics: Metrics,
    outcome: Outcome,
    now: datetime,
    *,
    request_id: str | None = None,
) -> OutcomeResult:
    """Record the outcome; count it when it settled the request (a replay counts nothing)."""
    recorded = await record(outcome, now, request_id=request_id)
    if recorded.changed:
        metrics.call_outcomes.labels(recorded.state or "", outcome.status or "").inc()
    return recorded
