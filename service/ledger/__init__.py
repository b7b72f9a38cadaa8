"""The ledger: every read and write of call requests; each transition and its event, one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

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
    Screen,
    Tracked,
    UnknownAttempt,
    Usage,
)
from service.ledger.retention import Purged, Purging


class Ledger(Claims, Batches, Attempts, Handoffs, OutboxStore, Purging):
    """Every read and write of the ledger; each method is one transaction (docs/internals.md)."""

    async def settle_and_claim(
        self,
        outcome: Outcome,
        now: datetime,
        limits: Limits,
        admit: Admit,
        screen: Screen | None = None,
        *,
        request_id: str | None = None,
    ) -> tuple[OutcomeResult, list[Claim], Admission]:
        """record_outcome, then claim_due when it freed a slot, in one transaction.

        The freed slot goes to the next due request at once: no moment in which the slot
        is free in the ledger while due work waits, and one commit fewer before the POST.
        Rows for Bland's batch API are left to claim_due (one Bland batch per row would not do).
        """

        async def work(conn: AsyncConnection) -> tuple[OutcomeResult, list[Claim], Admission]:
            recorded = await self._record_outcome(conn, outcome, now, request_id)
            if not recorded.changed:
                return recorded, [], Admission(admitted=0, limited_by=None)
            claims, admission = await self._claim(
                conn, now, limits, admit, screen, expire=False, singles_only=True
            )
            return recorded, claims, admission

        return await self._retrying(work)


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
