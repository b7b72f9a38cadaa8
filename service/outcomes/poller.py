"""`OutcomePoller`: asks Bland for calls whose outcome is overdue (a webhook lost or never set)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from service.backoff import poll_delay_s
from service.errors import DialerError
from service.ledger import Tracked
from service.outcomes.payloads import is_final, parse_outcome
from service.outcomes.rounds import LedgerRounds
from service.outcomes.settlement import settle
from service.settings import Settings

log = structlog.get_logger(__name__)

POLL_CAP_S = 900.0  # an overdue call is looked at again at least every 15 minutes
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
        """Record the call's outcome if Bland has one, else look again later."""
        try:
            details = await self.bland.get_call(tracked.call_id)
        except DialerError as exc:
            log.info("poll_failed", call_id=tracked.call_id, error=str(exc))
            details = None
        outcome = parse_outcome(details, "poll") if details is not None else None
        if outcome is not None and is_final(outcome):
            recorded = await settle(self.ledger, self.metrics, outcome, self.clock())
            return recorded.changed
        now = self.clock()
        overdue_s = (now - (tracked.outcome_due_at or now)).total_seconds()
        delay_s = poll_delay_s(overdue_s, self.settings.poll_interval_s, POLL_CAP_S)
        await self.ledger.postpone_check(tracked.request_id, now + timedelta(seconds=delay_s))
        return False
