"""Review: a concurrency slot outlives the longest call Bland may still be running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.envelope import DialerOptions
from service.ledger import Claim, Ledger, NewCall
from tests.support.ledger import claim as claim_round

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
HOUR_S = 3600.0


def at(seconds: float) -> datetime:
    """T0 plus some seconds."""
    return T0 + timedelta(seconds=seconds)


def long_call(request_id: str, max_duration_min: int) -> NewCall:
    """A due request whose call may last `max_duration_min` minutes."""
    phone = "+15555550142"
    return NewCall(
        request_id=request_id,
        correlation_id=None,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Talk.", "max_duration": max_duration_min},
        options=DialerOptions(),
        publisher_webhook=None,
    )


async def claim(ledger: Ledger, now: datetime) -> list[Claim]:
    """One claim round with one concurrent call and the default 4 h slot lease."""
    args: dict[str, Any] = {
        "owner": "test",
        "now": now,
        "limit": 10,
        "max_concurrent": 1,
        "max_per_second": 100.0,
        "slot_lease_s": 4 * HOUR_S,
    }
    return await claim_round(ledger, **args)


async def test_a_twelve_hour_call_keeps_its_slot_past_the_default_lease(ledger: Ledger) -> None:
    await ledger.accept_calls([long_call("long", 720), long_call("next", 720)], T0)
    (first,) = await claim(ledger, T0)
    assert first.request_id == "long"
    assert (await ledger.record_queued(first, "call-long", at(1))).recorded
    # Five hours in, Bland may still be running the 12 h call: no second call may start.
    assert await claim(ledger, at(5 * HOUR_S)) == []
    assert (await ledger.counts(at(5 * HOUR_S))).active_slots == 1
    assert await claim(ledger, at(12 * HOUR_S)) == []
    # Once the longest call is surely over (plus the margin), a lost outcome frees the slot.
    (second,) = await claim(ledger, at(14 * HOUR_S))
    assert second.request_id == "next"


async def test_a_short_call_keeps_the_configured_lease(ledger: Ledger) -> None:
    await ledger.accept_calls([long_call("a-short", 5), long_call("b-next", 5)], T0)
    (first,) = await claim(ledger, T0)
    assert await ledger.record_queued(first, "call-short", at(1))
    assert await claim(ledger, at(4 * HOUR_S - 1)) == []
    (second,) = await claim(ledger, at(4 * HOUR_S))
    assert second.request_id == "b-next"
