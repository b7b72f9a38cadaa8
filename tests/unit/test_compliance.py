"""Pure compliance screen, table-driven with a frozen clock: windows, zones, regions, caps."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import CallingWindow, DialerOptions
from service.dialing.compliance import RegionRule, Rules, rules_from, screen_round, verdict
from service.dialing.windows import Window, narrowest, open_in_all, parse_window, zone
from service.dialing.zones import regions_for_number, zones_for_number
from service.ledger.records import Candidate, NumberFacts
from service.settings import Settings

RULES = rules_from(Settings())
SAME_DAY = (2026, 6, 2)  # summer time in the north


def at(name: str, hour: int, minute: int = 0, day: tuple[int, int, int] = SAME_DAY) -> datetime:
    """A local wall-clock time in a zone, as UTC."""
    return datetime(*day, hour, minute, tzinfo=zone(name)).astimezone(UTC)


def call(phone: str, rid: str = "r", **options: object) -> Candidate:
    """A candidate to `phone` with these dialer options."""
    return Candidate(rid, phone, DialerOptions.model_validate(options))


# One number per US zone (and territories), multi-zone area codes, Florida, other countries.
# (number, zone whose local time the case is written in, local hour, expected verdict, reason)
CASES = [
    ("+12125550100", "America/New_York", 7, "defer", "calling_window"),
    ("+12125550100", "America/New_York", 8, "go", None),
    ("+12125550100", "America/New_York", 20, "go", None),
    ("+12125550100", "America/New_York", 21, "defer", "calling_window"),
    ("+13125550199", "America/Chicago", 8, "go", None),
    ("+13125550199", "America/Chicago", 7, "defer", "calling_window"),
    ("+13035550100", "America/Denver", 8, "go", None),
    ("+16025550100", "America/Phoenix", 8, "go", None),
    ("+16025550100", "America/Phoenix", 21, "defer", "calling_window"),
    ("+14155550100", "America/Los_Angeles", 8, "go", None),
    ("+14155550100", "America/Los_Angeles", 3, "defer", "calling_window"),
    ("+18085550100", "Pacific/Honolulu", 8, "go", None),
    ("+18085550100", "Pacific/Honolulu", 22, "defer", "calling_window"),
    ("+17875550100", "America/Puerto_Rico", 8, "go", None),
    ("+16715550100", "Pacific/Guam", 20, "go", None),
    ("+16715550100", "Pacific/Guam", 6, "defer", "calling_window"),
    # 907 spans Alaska's zones, Adak and (by the data) Honolulu: the westmost opens last.
    ("+19075550100", "America/Anchorage", 8, "defer", "calling_window"),
    ("+19075550100", "Pacific/Honolulu", 8, "go", None),
    # 270 and 850 are partly Central: 08:00 Eastern is 07:00 Central.
    ("+12705550100", "America/New_York", 8, "defer", "calling_window"),
    ("+12705550100", "America/Chicago", 8, "go", None),
    ("+12705550100", "America/New_York", 20, "go", None),
    ("+12705550100", "America/New_York", 21, "defer", "calling_window"),
    # 208 spans Mountain and Pacific.
    ("+12085550100", "America/Denver", 8, "defer", "calling_window"),
    ("+12085550100", "America/Los_Angeles", 8, "go", None),
    # Florida: 08:00-20:00, and 850 is partly Central.
    ("+13055550100", "America/New_York", 19, "go", None),
    ("+13055550100", "America/New_York", 20, "defer", "calling_window"),
    ("+18505550100", "America/New_York", 20, "defer", "calling_window"),
    ("+18505550100", "America/Chicago", 8, "go", None),
    ("+18505550100", "America/Chicago", 19, "defer", "calling_window"),  # 20:00 Eastern
    # Other countries.
    ("+442071234567", "Europe/London", 8, "go", None),
    ("+442071234567", "Europe/London", 21, "defer", "calling_window"),
    ("+81312345678", "Asia/Tokyo", 9, "go", None),
    ("+81312345678", "Asia/Tokyo", 23, "defer", "calling_window"),
    ("+919812345678", "Asia/Kolkata", 8, "go", None),
    ("+4915112345678", "Europe/Berlin", 5, "defer", "calling_window"),
    # Unknown zones: fictional 555 area code, American Samoa (no zone data).
    ("+15555550142", "UTC", 12, "suppress", "no_time_zone"),
    ("+16845550100", "UTC", 12, "suppress", "no_time_zone"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}@{c[2]}h-{c[1]}" for c in CASES])
@pytest.mark.parametrize("day", [(2026, 1, 15), (2026, 6, 2), (2026, 3, 8), (2026, 11, 1)])
def test_verdict_by_number_and_local_time(
    case: tuple[str, str, int, str, str | None], day: tuple[int, int, int]
) -> None:
    phone, tz, hour, expected, reason = case
    now = at(tz, hour, day=day)
    result = verdict(call(phone), NumberFacts(), RULES, now)
    assert (result.verdict, result.reason) == (expected, reason)
    if expected == "defer":
        assert result.not_before is not None
        assert result.not_before > now
        # The opening is when the strictest window opens in every zone of the number.
        follow = verdict(call(phone), NumberFacts(), RULES, result.not_before)
        assert follow.verdict == "go"
        before = verdict(
            call(phone), NumberFacts(), RULES, result.not_before - timedelta(seconds=1)
        )
        assert before.verdict == "defer"


def test_the_florida_rule_is_a_region_rule() -> None:
    assert regions_for_number("+13055550100") == ("US", "US-FL")
    assert regions_for_number("+18504320100") == ("US", "US-FL")  # "Pensacola, FL"
    assert regions_for_number("+442071234567") == ("GB",)
    assert regions_for_number("+15555550142") == ()


def test_a_request_zone_makes_an_unknown_number_dialable() -> None:
    now = at("America/Denver", 9)
    known = call("+15555550142", recipient_timezone="America/Denver")
    assert verdict(known, NumberFacts(), RULES, now).verdict == "go"
    night = verdict(known, NumberFacts(), RULES, at("America/Denver", 22))
    assert night.verdict == "defer"
    assert night.not_before == at("America/Denver", 8, day=(2026, 6, 3))


def test_a_request_window_can_only_narrow() -> None:
    narrow = call("+12125550100", calling_window={"start": "10:00", "end": "12:00"})
    assert verdict(narrow, NumberFacts(), RULES, at("America/New_York", 9)).verdict == "defer"
    assert verdict(narrow, NumberFacts(), RULES, at("America/New_York", 10)).verdict == "go"
    wide = call("+12125550100", calling_window={"start": "06:00", "end": "23:00"})
    assert verdict(wide, NumberFacts(), RULES, at("America/New_York", 7)).verdict == "defer"


def test_region_overrides_from_settings() -> None:
    rules = rules_from(
        Settings(region_rules={"GB": {"calling_window": "09:00-20:00", "max_calls_per_24h": 1}})
    )
    london = call("+442071234567")
    assert verdict(london, NumberFacts(), rules, at("Europe/London", 8)).verdict == "defer"
    capped = verdict(london, NumberFacts(calls_24h=1), rules, at("Europe/London", 10))
    assert (capped.verdict, capped.reason) == ("suppress", "frequency_cap")
    # Florida's default rule is replaced when region_rules is set: the global window applies.
    assert (
        verdict(call("+13055550100"), NumberFacts(), rules, at("America/New_York", 20)).verdict
        == "go"
    )


def test_do_not_call_and_the_frequency_cap_suppress() -> None:
    now = at("America/New_York", 12)
    listed = verdict(call("+12125550100"), NumberFacts(do_not_call=True), RULES, now)
    assert (listed.verdict, listed.reason) == ("suppress", "do_not_call")
    capped = verdict(call("+12125550100"), NumberFacts(calls_24h=3), RULES, now)
    assert (capped.verdict, capped.reason) == ("suppress", "frequency_cap")
    assert verdict(call("+12125550100"), NumberFacts(calls_24h=2), RULES, now).verdict == "go"


def test_the_same_number_waits_ten_seconds_silently() -> None:
    now = at("America/New_York", 12)
    recent = NumberFacts(calls_24h=1, last_call_at=now - timedelta(seconds=4))
    held = verdict(call("+12125550100"), recent, RULES, now)
    assert (held.verdict, held.reason) == ("hold", "same_number")
    assert held.not_before == now + timedelta(seconds=6)


def test_a_round_counts_its_own_calls_per_number() -> None:
    now = at("America/New_York", 12)
    candidates = [call("+12125550100", f"r{i}") for i in range(5)] + [call("+13125550199", "x")]
    verdicts = screen_round(candidates, {}, RULES, now, wanted=10)
    assert [v.verdict for v in verdicts] == ["go", "hold", "hold", "hold", "hold", "go"]
    capped = screen_round(
        candidates[:2], {"+12125550100": NumberFacts(calls_24h=2)}, RULES, now, wanted=10
    )
    assert [v.reason for v in capped] == [None, "frequency_cap"]


def test_a_round_stops_when_enough_may_go() -> None:
    now = at("America/New_York", 12)
    candidates = [call(f"+1212555{i:04d}", f"r{i}") for i in range(10)]
    assert len(screen_round(candidates, {}, RULES, now, wanted=3)) == 3


def test_an_always_open_window_ignores_zones() -> None:
    rules = Rules(window=parse_window("00:00-24:00"), max_calls_per_24h=0, same_number_gap_s=0)
    assert verdict(call("+15555550142"), NumberFacts(), rules, datetime.now(UTC)).verdict == "go"
    florida = Rules(
        window=parse_window("00:00-24:00"),
        max_calls_per_24h=0,
        same_number_gap_s=0,
        regions={"US-FL": RegionRule(window=parse_window("08:00-20:00"))},
    )
    result = verdict(call("+13055550100"), NumberFacts(), florida, at("America/New_York", 3))
    assert result.verdict == "defer"


SAMPLE_NUMBERS = sorted({phone for phone, *_ in CASES})


@settings(max_examples=300, deadline=None)
@given(
    phone=st.sampled_from(SAMPLE_NUMBERS),
    now=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
    start=st.sampled_from([None, time(9, 0), time(10, 30)]),
)
def test_no_call_goes_outside_the_strictest_window(
    phone: str, now: datetime, start: time | None
) -> None:
    window = CallingWindow(start=start) if start else None
    candidate = Candidate("r", phone, DialerOptions(calling_window=window))
    result = verdict(candidate, NumberFacts(), RULES, now)
    windows = [RULES.window, *([Window(start.hour * 60 + start.minute, 21 * 60)] if start else [])]
    if "US-FL" in regions_for_number(phone):
        windows.append(parse_window("08:00-20:00"))
    strictest = narrowest(windows)
    assert strictest is not None
    zones = zones_for_number(phone)
    if result.verdict == "go":
        assert zones
        assert open_in_all(strictest, zones, now)
    if result.verdict == "defer":
        assert result.not_before is not None
        assert open_in_all(strictest, zones, result.not_before)
