"""Recording an outcome learned from Bland, counted once when it settles the request."""

from __future__ import annotations

from datetime import datetime

from service.ledger import Ledger, Outcome, OutcomeResult
from service.metrics import Metrics


async def settle(
    ledger: Ledger,
    metrics: Metrics,
    outcome: Outcome,
    now: datetime,
    *,
    request_id: str | None = None,
) -> OutcomeResult:
    """Record the outcome; count it when it settled the request (a replay counts nothing)."""
    recorded = await ledger.record_outcome(outcome, now, request_id=request_id)
    if recorded.changed:
        metrics.call_outcomes.labels(recorded.state or "", outcome.status or "").inc()
    return recorded
