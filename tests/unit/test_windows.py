"""Pure calling windows: local time in every zone, DST transitions, next openings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.dialing.windows import (
    Window,
    narrowest,
    next_opening,
    open_in_all,
    parse_window,
    zone,
)

DEFAULT = Window(8 * 60, 21 * 60)
US_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "America/Adak",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
    "Pacific/Guam",
    "Pacific/Pago_Pago",
    "America/Boise",
    "America/Indiana/Indianapolis",
    "America/Detroit",
    "America/North_Dakota/Center",
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(name: str, *parts: int) -> datetime:
    """A wall-clock instant (year, month, day, hour, minute) in a zone, as UTC."""
    year, month, day, hour, minute = parts
    return datetime(year, month, day, hour, minute, tzinfo=zone(name)).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [("08:00-21:00", 480, 1260), ("00:00-24:00", 0, 1440), (" 9:30 - 20:00 ", 570, 1200)],
)
def test_parse_window(text: str, start: int, end: int) -> None:
    assert parse_window(text) == Window(start, end)
    assert str(parse_window(text)) == f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:00"


@pytest.mark.parametrize(
    "text", ["8-21", "21:00-08:00", "08:00-24:30", "25:00-26:00", "08:60-9:00"]
)
def test_a_bad_window_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="calling window"):
        parse_window(text)


def test_the_strictest_window_wins() -> None:
    assert narrowest([DEFAULT, Window(480, 1200), Window(540, 1440)]) == Window(540, 1200)
    assert narrowest([Window(0, 60), Window(120, 180)]) is None


@pytest.mark.parametrize("name", US_ZONES)
@pytest.mark.parametrize("day", [(2026, 1, 15), (2026, 7, 15)])
def test_every_us_zone_opens_at_eight_and_closes_at_nine_local(
    name: str, day: tuple[int, int, int]
) -> None:
    opening = local(name, *day, 8, 0)
    assert not open_in_all(DEFAULT, [name], opening - timedelta(seconds=1))
    assert open_in_all(DEFAULT, [name], opening)
    assert next_opening(DEFAULT, [name], opening - timedelta(hours=3)) == opening
    closing = local(name, *day, 21, 0)
    assert open_in_all(DEFAULT, [name], closing - timedelta(seconds=1))
    assert not open_in_all(DEFAULT, [name], closing)
    tomorrow = local(name, day[0], day[1], day[2] + 1, 8, 0)
    assert next_opening(DEFAULT, [name], closing) == tomorrow


# 2026: DST starts 8 March (02:00 -> 03:00) and ends 1 November (02:00 -> 01:00) in the US.
@pytest.mark.parametrize(
    ("name", "closed_at", "opens_at"),
    [
        ("America/New_York", utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 12, 0)),  # 08:00 EDT
        ("America/New_York", utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 13, 0)),  # 08:00 EST
        ("America/Los_Angeles", utc(2026, 3, 8, 9, 0), utc(2026, 3, 8, 15, 0)),
        ("America/Los_Angeles", utc(2026, 11, 1, 9, 0), utc(2026, 11, 1, 16, 0)),
        ("America/Phoenix", utc(2026, 3, 8, 9, 0), utc(2026, 3, 8, 15, 0)),  # no DST
        ("Europe/London", utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 7, 0)),  # 08:00 BST
        ("Europe/London", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 8, 0)),  # 08:00 GMT
    ],
)
def test_dst_days_open_at_eight_local_exactly(
    name: str, closed_at: datetime, opens_at: datetime
) -> None:
    assert next_opening(DEFAULT, [name], closed_at) == opens_at
    assert not open_in_all(DEFAULT, [name], opens_at - timedelta(microseconds=1))


def test_a_window_starting_inside_the_spring_gap_opens_at_the_transition() -> None:
    # 02:30 does not exist on 8 March 2026 in New York: local time jumps from 01:59:59 EST
    # to 03:00 EDT at 07:00 UTC, which is when "local time >= 02:30" first holds.
    window = Window(150, 600)
    assert next_opening(window, ["America/New_York"], utc(2026, 3, 8, 5, 0)) == utc(
        2026, 3, 8, 7, 0
    )


def test_the_repeated_hour_in_autumn_closes_a_window_again() -> None:
    # 01:00-01:30 local on 1 November 2026 happens twice in New York.
    window = Window(60, 90)
    first = next_opening(window, ["America/New_York"], utc(2026, 11, 1, 4, 0))
    assert first == utc(2026, 11, 1, 5, 0)  # 01:00 EDT
    second = next_opening(window, ["America/New_York"], utc(2026, 11, 1, 5, 30))
    assert second == utc(2026, 11, 1, 6, 0)  # 01:00 EST, the second time round


def test_a_window_open_in_all_zones_waits_for_the_westmost() -> None:
    zones = ["America/New_York", "America/Chicago"]
    at_eight_eastern = local("America/New_York", 2026, 6, 2, 8, 0)
    assert not open_in_all(DEFAULT, zones, at_eight_eastern)
    assert next_opening(DEFAULT, zones, at_eight_eastern) == local(
        "America/Chicago", 2026, 6, 2, 8, 0
    )
    # Closes with the eastmost zone.
    assert not open_in_all(DEFAULT, zones, local("America/New_York", 2026, 6, 2, 21, 0))


def test_zones_half_a_day_apart_never_share_a_twelve_hour_window() -> None:
    window = Window(8 * 60, 20 * 60)
    assert next_opening(window, ["America/New_York", "Asia/Shanghai"], utc(2026, 6, 2)) is None


@pytest.mark.parametrize(
    "name",
    ["Asia/Tokyo", "Australia/Sydney", "Asia/Kolkata", "Asia/Kathmandu", "America/Sao_Paulo"],
)
def test_non_us_zones(name: str) -> None:
    opening = local(name, 2026, 10, 5, 8, 0)
    assert next_opening(DEFAULT, [name], opening - timedelta(hours=5)) == opening


ZONES = st.lists(st.sampled_from([*US_ZONES, "Europe/London", "Australia/Lord_Howe"]), min_size=1, max_size=3, unique=True)  # fmt: skip
INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
WINDOWS = st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(lambda w: w[0] < w[1])


@settings(max_examples=150, deadline=None)
@given(zones=ZONES, now=INSTANTS, bounds=WINDOWS)
def test_the_next_opening_is_open_and_nothing_before_it_is(
    zones: list[str], now: datetime, bounds: tuple[int, int]
) -> None:
    window = Window(*bounds)
    opening = next_opening(window, zones, now)
    if opening is None:
        return
    assert opening >= now
    assert open_in_all(window, zones, opening)
    if opening > now:
        assert not open_in_all(window, zones, opening - timedelta(microseconds=1))
        step = timedelta(minutes=7)
        probe = now
        while probe < opening:
            assert not open_in_all(window, zones, probe)
            probe += step
