"""The ledger: every read and write of call requests; each transition and its event, one transaction."""

from __future__ import annotations

from service.ledger.attempts import Attempts
from service.ledger.batches import Batches
from service.ledger.claims import Claims
from service.ledger.engine import make_engine, mapped_errors
from service.ledger.handoffs import Handoffs
from service.ledger.outbox import OutboxStore
from service.ledger.records import (
    Accepted,
    Admission,
    Admit,
    BatchAcceptance,
    BatchCancel,
    CallToStop,
    CancelResult,
    Claim,
    LedgerCounts,
    Limits,
    NewBatch,
    NewCall,
    OutboxRow,
    Outcome,
    OutcomeResult,
    Queued,
    RejectedRecipient,
    Tracked,
    UnknownAttempt,
    Usage,
)
from service.ledger.retention import Purged, Purging


class Ledger(Claims, Batches, Attempts, Handoffs, OutboxStore, Purging):
    """Every read and write of the ledger; each method is one transaction (docs/internals.md)."""


__all__ = [
    "Accepted",
    "Admission",
    "Admit",
    "BatchAcceptance",
    "BatchCancel",
    "CallToStop",
    "CancelResult",
    "Claim",
    "Ledger",
    "LedgerCounts",
    "Limits",
    "NewBatch",
    "NewCall",
    "OutboxRow",
    "Outcome",
    "OutcomeResult",
    "Purged",
    "Queued",
    "RejectedRecipient",
    "Tracked",
    "UnknownAttempt",
    "Usage",
    "make_engine",
    "mapped_errors",
]
