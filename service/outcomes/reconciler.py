"""`Reconciler`: settle dial attempts whose outcome is unknown by asking Bland's list of calls.

One rule for every unknown outcome, an ambiguous POST failure and a claim left by a dead
process alike: a call carrying the request id in its metadata → queued. None, read after
the grace from Bland's complete list for the number (both number forms, no page full, every
row readable) → dialed again, at most `max_unknown_redials` times; otherwise (the list could
not be read whole, or the redials are spent) → `call.unresolved`, never dialed again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from service.backoff import poll_delay_s
from service.bland.client import BlandClient, max_request_s
from service.bland.metadata import request_id_in
from service.clock import Clock, utcnow
from service.errors import DialerError
from service.ledger import Ledger, UnknownAttempt
from service.metrics import Metrics
from service.outcomes.payloads import is_final, parse_outcome, parse_time
from service.outcomes.rounds import LedgerRounds
from service.outcomes.settlement import RecordOutcome, settle
from service.outcomes.stops import CallStops
from service.settings import Settings

log = structlog.get_logger(__name__)

# Bland's clock and ours differ; the window only narrows the search (the match is on our
# request id), so a generous allowance costs nothing but a longer list.
CLOCK_SKEW_S = 300.0
LIST_LIMIT = 200
CHECK_CAP_S = 60.0
# The `result` label of dialer_reconciliations_total for one unknown attempt.
ReconcileResult = Literal["matched", "requeued", "unresolved", "pending", "error"]


def candidates(
    calls: Iterable[Mapping[str, Any]], started_at: datetime, skew_s: float
) -> list[Mapping[str, Any]]:
    """Calls created at or after the attempt started (less the skew); undated ones are kept."""
    earliest = started_at - timedelta(seconds=skew_s)
    kept = []
    for call in calls:
        created = parse_time(call.get("created_at"))
        if created is None or created >= earliest:
            kept.append(call)
    return kept


def carries(call: Mapping[str, Any], request_id: str) -> bool | None:
    """Whether the call's metadata names our request; None when the row has no metadata."""
    metadata = call.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    return request_id_in(metadata) == request_id


def number_forms(phone_number: str) -> list[str]:
    """The E.164 number, then its digits alone (older Bland examples list `to` without '+')."""
    digits = phone_number.lstrip("+")
    return [phone_number, digits] if digits != phone_number else [phone_number]


def stale_dialing_after_s(settings: Settings) -> float:
    """A `dialing` row older than the longest possible POST (plus a margin) was abandoned."""
    return max_request_s(settings) + settings.stale_claim_margin_s


class Reconciler(LedgerRounds):
    """Sweeps abandoned `dialing` rows to unknown, then looks each unknown attempt up at Bland."""

    round_name = "reconciler"
    failed_event = "reconcile_round_failed"
    default_batch_size = 50

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        bland: BlandClient,
        metrics: Metrics,
        *,
        stops: CallStops,
        clock: Clock = utcnow,
        batch_size: int | None = None,
        record: RecordOutcome | None = None,
    ) -> None:
        super().__init__(
            settings, ledger, bland, metrics, clock=clock, batch_size=batch_size, record=record
        )
        self.stops = stops

    @staticmethod
    def interval_s(settings: Settings) -> float:
        """Seconds between reconciliation rounds."""
        return settings.reconcile_interval_s

    async def run_once(self) -> Counter[str]:
        """One round: sweep, every unknown attempt due, then stops owed to canceled calls."""
        now = self.clock()
        swept = await self.ledger.sweep_stale_dialing(now, stale_dialing_after_s(self.settings))
        if swept:
            self.metrics.reconciliations.labels("swept").inc(swept)
            log.warning("stale_dialing_swept", count=swept)
        results: Counter[str] = Counter({"swept": swept})
        for attempt in await self.ledger.unknown_attempts(now, self.batch_size):
            result = await self.reconcile(attempt)
            self.metrics.reconciliations.labels(result).inc()
            results[result] += 1
        # After matching, so a call found this round for a canceled request is stopped now.
        results.update(await self.stops.stop_owed(self.batch_size))
        return results

    async def reconcile(self, attempt: UnknownAttempt) -> ReconcileResult:
        """matched (now queued), requeued (orphan never received), unresolved, pending or error."""
        try:
            call, complete = await self.lookup(attempt)
        except DialerError as exc:
            log.info("reconcile_lookup_failed", request_id=attempt.request_id, error=str(exc))
            await self._postpone(attempt)
            return "error"
        now = self.clock()
        if call is not None:
            await self._resolve(attempt, call, now)
            return "matched"
        age_s = (now - attempt.attempt_started_at).total_seconds()
        if age_s >= self.settings.reconcile_grace_s and self._redial(complete):
            reason = f"no call at Bland {round(age_s)} s after the attempt: dialed again"
            requeued = await self.ledger.requeue_unknown(
                attempt.request_id, now, reason, max_redials=self.settings.max_unknown_redials
            )
            if requeued:
                log.warning("unknown_outcome_redialed", request_id=attempt.request_id)
                return "requeued"
        if age_s >= self.settings.reconcile_grace_s:
            reason = (
                f"no call for this request at Bland {round(age_s)} s after the attempt; "
                "not redialed"
            )
            if not await self.ledger.mark_unresolved(attempt.request_id, reason, now):
                return "pending"  # another replica settled it meanwhile
            log.warning("unknown_outcome_unresolved", request_id=attempt.request_id)
            return "unresolved"
        await self._postpone(attempt)
        return "pending"

    def _redial(self, complete: bool) -> bool:
        """Dial again only when Bland's whole list for the number was seen."""
        return self.settings.redial_unknown and complete

    async def find(self, attempt: UnknownAttempt) -> Mapping[str, Any] | None:
        """The call at Bland whose metadata carries this request id, if any."""
        call, _ = await self.lookup(attempt)
        return call

    async def lookup(self, attempt: UnknownAttempt) -> tuple[Mapping[str, Any] | None, bool]:
        """(the call carrying this request id or None, whether the search saw every candidate)."""
        if not attempt.phone_number:
            return None, False
        complete = True
        # Bland's docs show `to` both with and without '+': absence must hold for both forms.
        for number in number_forms(attempt.phone_number):
            call, seen_all = await self._lookup_as(attempt, number)
            if call is not None:
                return call, True
            complete = complete and seen_all
        return None, complete

    async def _lookup_as(
        self, attempt: UnknownAttempt, number: str
    ) -> tuple[Mapping[str, Any] | None, bool]:
        started = attempt.attempt_started_at
        # Oldest first from just before the attempt: the call it placed is on the first page
        # however often the number was called since (newest first, a full page would hide it).
        rows = await self.bland.list_calls(
            to_number=number,
            start_date=started - timedelta(seconds=CLOCK_SKEW_S),
            limit=LIST_LIMIT,
            ascending=True,
        )
        found: list[Mapping[str, Any]] = []
        unreadable = 0
        for row in candidates(rows, started, CLOCK_SKEW_S):
            call = row
            if carries(row, attempt.request_id) is None and isinstance(row.get("call_id"), str):
                call = await self.bland.get_call(row["call_id"]) or row
            mine = carries(call, attempt.request_id)
            unreadable += mine is None
            if mine:
                found.append(call)
        if len(found) > 1:  # one POST made two calls? Never expected: say so loudly.
            ids = [c.get("call_id") for c in found]
            log.error("several_calls_for_one_request", request_id=attempt.request_id, call_ids=ids)
        found.sort(key=lambda c: str(c.get("created_at") or ""))
        # A full page may hide older rows, an unreadable row may be ours: absence unproven.
        return (found[0] if found else None), len(rows) < LIST_LIMIT and not unreadable

    async def _resolve(
        self, attempt: UnknownAttempt, call: Mapping[str, Any], now: datetime
    ) -> None:
        call_id = str(call.get("call_id"))
        await self.ledger.resolve_unknown(attempt.request_id, call_id, now)
        log.info("unknown_outcome_matched", request_id=attempt.request_id, call_id=call_id)
        outcome = parse_outcome(call, "poll")
        if outcome is not None and is_final(outcome):  # it is over already: settle it now
            await settle(self.record, self.metrics, outcome, now)

    async def _postpone(self, attempt: UnknownAttempt) -> None:
        """Look again later, thinning out, but exactly at the end of the grace period once."""
        now = self.clock()
        age_s = (now - attempt.attempt_started_at).total_seconds()
        delay_s = poll_delay_s(age_s, self.settings.reconcile_interval_s, CHECK_CAP_S)
        deadline = attempt.attempt_started_at + timedelta(seconds=self.settings.reconcile_grace_s)
        next_at = now + timedelta(seconds=delay_s)
        if now < deadline < next_at:
            next_at = deadline
        await self.ledger.postpone_check(attempt.request_id, next_at)
