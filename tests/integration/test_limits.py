"""Limits and compliance in the claim round, on both databases, with a frozen clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.envelope import DialerOptions
from schemas.events import CallDeferred, CallExpired, CallSuppressed
from service.dialing.admission import admit, settings_limits
from service.dialing.compliance import rules_from, screen_round
from service.dialing.windows import zone
from service.ledger import Admission, Claim, Ledger, NewCall, Outcome
from service.ledger.records import Candidate, NumberFacts, Screened
from service.settings import Settings
from tests.support.ledger import events, row

pytestmark = pytest.mark.integration

NEW_YORK = "+12125550100"
CHICAGO = "+13125550199"


def ny(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A wall-clock time in New York on 2 June 2026, as UTC."""
    return datetime(2026, 6, 2, hour, minute, second, tzinfo=zone("America/New_York")).astimezone(
        UTC
    )


def call(rid: str, phone: str, **options: Any) -> NewCall:
    """A request to `phone` with these dialer options."""
    return NewCall(
        request_id=rid,
        correlation_id=None,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Hello."},
        options=DialerOptions.model_validate(options),
        publisher_webhook=None,
    )


class Round:
    """Claim rounds as the dispatcher runs them: its limits, its compliance screen."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.settings = settings
        self.rules = rules_from(settings)

    def screen(
        self,
        candidates: Sequence[Candidate],
        facts: Mapping[str, NumberFacts],
        now: datetime,
        wanted: int,
    ) -> list[Screened]:
        """The dispatcher's screen."""
        return screen_round(candidates, facts, self.rules, now, wanted)

    async def claim(self, now: datetime, limit: int = 20) -> tuple[list[Claim], Admission]:
        """One round."""
        limits = settings_limits(self.settings, owner="t", limit=limit)
        return await self.ledger.claim_due(now, limits, admit, self.screen)

    async def ids(self, now: datetime, limit: int = 20) -> list[str]:
        """The request ids one round claims."""
        claims, _ = await self.claim(now, limit)
        return [c.request_id for c in claims]

    async def place(self, now: datetime, limit: int = 20) -> list[str]:
        """Claim and record each as queued (a call was placed)."""
        claims, _ = await self.claim(now, limit)
        for c in claims:
            await self.ledger.record_queued(c, f"call-{c.request_id}", now)
        return [c.request_id for c in claims]


def rounds(ledger: Ledger, **overrides: Any) -> Round:
    """Rounds under the default rules (08:00-21:00, Florida, 3 per 24 h) unless overridden."""
    values: dict[str, Any] = {"max_calls_per_second": 100.0, "max_concurrent_calls": 100}
    return Round(ledger, Settings(**{**values, **overrides}))


async def test_a_closed_window_defers_until_the_local_opening(ledger: Ledger) -> None:
    r = rounds(ledger)
    await ledger.accept_calls([call("early", NEW_YORK), call("chicago", CHICAGO)], ny(3))
    claims, admission = await r.claim(ny(3))
    assert claims == []
    assert {s.verdict for s in admission.screened} == {"defer"}
    assert (await row(ledger, "early")).not_before == ny(8)
    assert (await row(ledger, "chicago")).not_before == ny(9)  # 08:00 Central
    (deferred,) = [e for e in await events(ledger, "early") if isinstance(e, CallDeferred)]
    assert deferred.not_before == ny(8)
    assert deferred.reason == "calling_window"
    # Nothing is due (no event again) until the opening; then it is dialed.
    assert await r.ids(ny(7, 59, 59)) == []
    assert await r.ids(ny(8)) == ["early"]
    assert await r.ids(ny(8, 59, 59)) == []
    assert await r.ids(ny(9)) == ["chicago"]
    assert len([e for e in await events(ledger, "early") if isinstance(e, CallDeferred)]) == 1


async def test_unknown_zones_are_suppressed_unless_the_request_gives_one(ledger: Ledger) -> None:
    r = rounds(ledger)
    fictional = "+15555550142"
    await ledger.accept_calls(
        [call("nozone", fictional), call("zoned", fictional, recipient_timezone="America/Denver")],
        ny(12),
    )
    assert await r.ids(ny(12)) == ["zoned"]
    assert (await row(ledger, "nozone")).state == "suppressed"
    (ev,) = [e for e in await events(ledger, "nozone") if isinstance(e, CallSuppressed)]
    assert ev.reason == "no_time_zone"


async def test_an_opt_out_after_acceptance_prevents_the_call(ledger: Ledger) -> None:
    r = rounds(ledger)
    await ledger.accept_calls([call("opted", NEW_YORK, not_before=ny(12, 0, 5))], ny(12))
    assert await ledger.dnc_add(NEW_YORK, reason="asked", now=ny(12, 0, 1))
    assert not await ledger.dnc_add(NEW_YORK, reason="again", now=ny(12, 0, 2))
    assert await r.ids(ny(12, 1)) == []
    assert (await row(ledger, "opted")).state == "suppressed"
    (ev,) = [e for e in await events(ledger, "opted") if isinstance(e, CallSuppressed)]
    assert ev.reason == "do_not_call"
    # Off the list again: a new request is dialed.
    assert await ledger.dnc_remove(NEW_YORK, now=ny(12, 2))
    await ledger.accept_calls([call("later", NEW_YORK)], ny(12, 3))
    assert await r.ids(ny(12, 3)) == ["later"]


async def test_ten_requests_for_one_number_place_no_more_calls_than_the_cap(
    ledger: Ledger,
) -> None:
    r = rounds(ledger)
    await ledger.accept_calls([call(f"n{i}", NEW_YORK) for i in range(10)], ny(9))
    placed: list[str] = []
    now = ny(9)
    for _ in range(40):  # a round every 5 s for more than the 10 s gaps
        placed += await r.place(now)
        now += timedelta(seconds=5)
    assert len(placed) == 3
    states = [(await row(ledger, f"n{i}")).state for i in range(10)]
    assert states.count("queued") == 3
    assert states.count("suppressed") == 7
    suppressed = [e for i in range(10) for e in await events(ledger, f"n{i}")]
    assert {e.reason for e in suppressed if isinstance(e, CallSuppressed)} == {"frequency_cap"}


async def test_the_same_number_waits_ten_seconds_between_calls(ledger: Ledger) -> None:
    r = rounds(ledger, max_calls_per_number_24h=0)
    await ledger.accept_calls([call("a", NEW_YORK), call("b", NEW_YORK)], ny(10))
    assert await r.place(ny(10)) == ["a"]
    assert (await row(ledger, "b")).not_before == ny(10, 0, 10)
    assert not [e for e in await events(ledger, "b") if isinstance(e, CallDeferred)]
    assert await r.place(ny(10, 0, 9)) == []
    assert await r.place(ny(10, 0, 10)) == ["b"]


async def test_the_florida_window_closes_at_eight(ledger: Ledger) -> None:
    r = rounds(ledger)
    miami = "+13055550100"
    await ledger.accept_calls([call("fl", miami), call("ny", NEW_YORK)], ny(20, 30))
    assert await r.ids(ny(20, 30)) == ["ny"]
    assert (await row(ledger, "fl")).not_before == ny(8) + timedelta(days=1)


async def test_hourly_and_daily_caps_count_calls_placed_across_the_window(
    ledger: Ledger,
) -> None:
    r = rounds(ledger, plan="start", max_calls_per_day=8, max_calls_per_number_24h=0)
    assert r.settings.max_calls_per_hour == 100  # the preset; the daily cap overridden
    await ledger.accept_calls([call(f"c{i:02d}", f"+1212555{i:04d}") for i in range(12)], ny(9))
    assert len(await r.place(ny(9))) == 8
    _, admission = await r.claim(ny(12))
    assert admission.limited_by == "daily"
    assert len(await r.place(ny(9) + timedelta(hours=24, seconds=1))) == 4


async def test_a_bland_429_pauses_every_claimer_and_lowers_the_pace(ledger: Ledger) -> None:
    r = rounds(ledger, pace_recovery_s=60.0)
    await ledger.accept_calls([call("p", NEW_YORK)], ny(12))
    pace = await ledger.note_throttled(ny(12), pause_s=2.0)
    assert pace == 0.5
    # A 429 of the same episode (its POST was already in flight) only extends the pause.
    assert await ledger.note_throttled(ny(12, 0, 1), pause_s=2.0) == pytest.approx(0.5, abs=0.01)
    claims, admission = await r.claim(ny(12, 0, 2))
    assert (claims, admission.limited_by) == ([], "bland_429")
    claims, admission = await r.claim(ny(12, 0, 4))
    assert [c.request_id for c in claims] == ["p"]
    assert 0.5 < admission.pace < 0.6
    _, later = await r.claim(ny(12, 2))
    assert later.pace == 1.0


async def test_expiry_and_priority(ledger: Ledger) -> None:
    r = rounds(ledger, max_calls_per_number_24h=0)
    await ledger.accept_calls(
        [
            call("old", "+12125550001", expires_at=ny(9, 0, 30)),
            call("low", "+12125550002", priority=1),
            call("high", "+12125550003", priority=9),
        ],
        ny(3),
    )
    await r.claim(ny(3))  # the window is closed: deferred to 08:00
    assert await r.ids(ny(9, 1), limit=1) == ["high"]
    assert (await row(ledger, "old")).state == "expired"
    assert any(isinstance(e, CallExpired) for e in await events(ledger, "old"))
    assert await r.ids(ny(9, 2), limit=1) == ["low"]


async def test_a_scheduled_call_holds_its_slot_from_its_start(ledger: Ledger) -> None:
    r = rounds(ledger, max_concurrent_calls=1, max_calls_per_number_24h=0)
    later = call("a-sched", "+12125550001")
    start = (ny(11)).strftime("%Y-%m-%d %H:%M:%S +00:00")
    scheduled = NewCall(**{**later.__dict__, "body": {**later.body, "start_time": start}})
    await ledger.accept_calls([scheduled, call("b-now", "+12125550002")], ny(9))
    assert await r.place(ny(9), limit=1) == ["a-sched"]
    # The scheduled call does not run before 11:00: its slot is free until then.
    assert await r.place(ny(9, 1)) == ["b-now"]


async def test_a_call_scheduled_into_a_closed_window_is_suppressed(ledger: Ledger) -> None:
    r = rounds(ledger)
    night = call("night", NEW_YORK)
    start = ny(23).strftime("%Y-%m-%d %H:%M:%S +00:00")
    await ledger.accept_calls(
        [NewCall(**{**night.__dict__, "body": {**night.body, "start_time": start}})], ny(12)
    )
    assert await r.ids(ny(12)) == []
    (ev,) = [e for e in await events(ledger, "night") if isinstance(e, CallSuppressed)]
    assert ev.reason == "start_time_outside_window"


async def test_single_calls_are_not_starved_behind_a_ten_thousand_row_campaign(
    ledger: Ledger,
) -> None:
    r = rounds(ledger, calling_window="00:00-24:00", max_calls_per_number_24h=0)
    t0 = ny(10)
    campaign = [call(f"camp-{i:05d}", f"+1212{i:07d}", campaign_id="big") for i in range(10_000)]
    for start in range(0, len(campaign), 1000):
        await ledger.accept_calls(campaign[start : start + 1000], t0)
    assert await r.ids(t0, limit=10)  # the campaign is being dialed
    singles = [call(f"single-{i:02d}", f"+1312555{i:04d}") for i in range(20)]
    await ledger.accept_calls(singles, t0 + timedelta(seconds=1))
    taken: list[str] = []
    for n in range(1, 6):
        taken += await r.ids(t0 + timedelta(seconds=1 + n), limit=10)
    # Each single call is a share of its own: all 20 go within the next few rounds.
    assert {f"single-{i:02d}" for i in range(20)} <= set(taken[:40])


async def test_two_campaigns_share_by_weight(ledger: Ledger) -> None:
    r = rounds(ledger, calling_window="00:00-24:00", max_calls_per_number_24h=0)
    t0 = ny(10)
    big = [call(f"a{i:04d}", f"+1212{i:07d}", campaign_id="a") for i in range(300)]
    await ledger.accept_calls(big, t0)
    heavy = [
        call(f"b{i:04d}", f"+1312{i:07d}", campaign_id="b", campaign_weight=3) for i in range(300)
    ]
    await ledger.accept_calls(heavy, t0 + timedelta(seconds=1))
    taken = await r.ids(t0 + timedelta(seconds=2), limit=100)
    from_b = sum(1 for rid in taken if rid.startswith("b"))
    assert 70 <= from_b <= 80  # weight 3 against 1: three quarters


async def test_a_settled_call_hands_its_slot_to_the_next_request_in_one_commit(
    ledger: Ledger,
) -> None:
    r = rounds(ledger, max_concurrent_calls=1)
    later = "+12125550177"
    await ledger.accept_calls([call("first", NEW_YORK), call("second", later)], ny(12))
    assert await r.place(ny(12)) == ["first"]
    assert await r.ids(ny(12, 0, 1)) == []  # the one slot is taken
    limits = settings_limits(r.settings, owner="t", limit=20)
    done = Outcome(call_id="call-first", status="completed", completed=True)
    recorded, claims, admission = await ledger.settle_and_claim(
        done, ny(12, 1), limits, admit, r.screen
    )
    assert (recorded.changed, recorded.state) == (True, "completed")
    assert [c.request_id for c in claims] == ["second"]
    assert admission.admitted == 1
    assert (await row(ledger, "second")).state == "dialing"
    # A replay changes nothing and claims nothing.
    again, none, _ = await ledger.settle_and_claim(done, ny(12, 2), limits, admit, r.screen)
    assert (again.changed, none) == (False, [])
