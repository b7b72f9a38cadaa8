"""`CallStops`: the calls of canceled requests, stopped at Bland until Bland accepts the stop."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import structlog

from service.bland.client import BlandClient
from service.clock import Clock, utcnow
from service.errors import DialerError
from service.ledger import CallToStop, Ledger
from service.metrics import Metrics

log = structlog.get_logger(__name__)

StopResult = Literal["stop_sent", "stop_retry"]


class CallStops:
    """Stops one canceled call at once, or every call still owed a stop (the sweep)."""

    def __init__(
        self, ledger: Ledger, bland: BlandClient, metrics: Metrics, *, clock: Clock = utcnow
    ) -> None:
        self.ledger = ledger
        self.bland = bland
        self.metrics = metrics
        self.clock = clock

    async def stop(self, call: CallToStop) -> StopResult:
        """Ask Bland to stop a canceled request's call; record it only once Bland accepts.

        A refusal ("SID not found" for a call still being set up) or a failure leaves the
        call in `calls_to_stop` until its outcome settles it or a later stop is accepted.
        """
        try:
            accepted = await self.bland.stop_call(call.call_id)
        except DialerError as exc:
            self.metrics.call_stops.labels("error").inc()
            log.warning("stop_call_failed", request_id=call.request_id, error=str(exc))
            return "stop_retry"
        self.metrics.call_stops.labels("sent" if accepted else "refused").inc()
        if not accepted:
            log.info("stop_call_refused", request_id=call.request_id, call_id=call.call_id)
            return "stop_retry"
        await self.ledger.mark_stop_sent(call.request_id, self.clock())
        log.info("canceled_call_stopped", request_id=call.request_id, call_id=call.call_id)
        return "stop_sent"

    async def stop_owed(self, limit: int) -> Counter[StopResult]:
        """Stop every call still owed a stop, oldest cancel first (at most `limit`)."""
        results: Counter[StopResult] = Counter()
        for call in await self.ledger.calls_to_stop(limit):
            results[await self.stop(call)] += 1
        return results
