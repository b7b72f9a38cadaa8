"""The ledger: every read and write of call requests; each transition and its event, one transaction."""

from __future__ import annotations

from service.ledger.attempts import Attempts
from service.ledger.claims import Claims
from service.ledger.engine import make_engine, mapped_errors
from service.ledger.outbox import OutboxStore
from service.ledger.records import (
    Accepted,
    CallToStop,
    CancelResult,
    Claim,
    LedgerCounts,
    NewCall,
    OutboxRow,
    Outcome,
    OutcomeResult,
    Queued,
    Tracked,
    UnknownAttempt,
)
from service.ledger.tracking import Tracking


class Ledger(Claims, Attempts, Tracking, OutboxStore):
    """Every read and write of the ledger; each method is one transaction (docs/internals.md)."""


__all__ = [
    "Accepted",
    "CallToStop",
    "CancelResult",
    "Claim",
    "Ledger",
    "LedgerCounts",
    "NewCall",
    "OutboxRow",
    "Outcome",
    "OutcomeResult",
    "Queued",
    "Tracked",
    "UnknownAttempt",
    "make_engine",
    "mapped_errors",
]
