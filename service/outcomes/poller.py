"""`OutcomePoller`: asks Bland about live calls no webhook has settled (lost, or never set).

Each queued call is looked at `outcome_overdue_s` after it was queued, then every
`outcome_poll_every_s` while it is live (about one GET per live call per minute by default):
a call whose webhook never comes is settled within about that interval plus the webhook
grace after it ends, whatever its max_duration. A webhook that comes first ends the polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from service.errors import DialerError
from service.ledger import Outcome, Tracked
from service.outcomes.payloads import ended_at, is_final, parse_outcome
from service.outcomes.rounds import LedgerRounds
from service.outcomes.settlement import settle
from service.settings import Settings

log = structlog.get_logger(__name__)

POLL_CONCURRENCY = 8


class OutcomePoller(LedgerRounds):
    """Polls `GET /v1/calls/{id}` for queued calls whose next check has come."""

    round_name = "outcome-poller"
    failed_event = "poll_round_failed"
    default_batch_size = 100

    @staticmethod
    def interval_s(settings: Settings) -> float:
        """Seconds between polling rounds."""
        return settings.poll_interval_s

    async def run_once(self) -> int:
        """Check every overdue call once; returns how many outcomes were recorded."""
        due = await self.ledger.overdue_calls(self.clock(), self.batch_size)
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def bounded(tracked: Tracked) -> bool:
            async with gate:
                return await self.check(tracked)

        results = await asyncio.gather(*(bounded(t) for t in due), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:  # every check ran to its end; the round reports the first failure
            raise failed[0]
        return sum(r is True for r in results)

    async def check(self, tracked: Tracked) -> bool:
        """Record the call's outcome if Bland has one (and its webhook had its chance)."""
        try:
            details = await self.bland.get_call(tracked.call_id)
        except DialerError as exc:
            log.info("poll_failed", call_id=tracked.call_id, error=str(exc))
            details = None
        outcome = parse_outcome(details, "poll") if details is not None else None
        now = self.clock()
        next_at = next_look(details, outcome, now, self.settings)
        if next_at is None and outcome is not None:
            recorded = await settle(self.record, self.metrics, outcome, now)
            return recorded.changed
        await self.ledger.postpone_check(tracked.request_id, next_at or now)
        return False


def next_look(
    details: Mapping[str, Any] | None, outcome: Outcome | None, now: datetime, settings: Settings
) -> datetime | None:
    """When to look at a call again; None: settle it from this poll now.

    A live (or unreadable) call: again in `outcome_poll_every_s`. A finished one: once its
    webhook had `webhook_grace_s` after the end to arrive (none is coming without our
    webhook URL), so Bland's webhook, the one forwarded to the publisher, normally wins.
    """
    if details is None or outcome is None or not is_final(outcome):
        return now + timedelta(seconds=settings.outcome_poll_every_s)
    grace_s = settings.webhook_grace_s if settings.webhook_url else 0.0
    settle_at = ended_at(details, now) + timedelta(seconds=grace_s)
    return settle_at if settle_at > now else None
