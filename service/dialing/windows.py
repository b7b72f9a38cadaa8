"""Pure calling windows in the recipient's local time: is it open, and when does it open next."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 1440
HORIZON_DAYS = 8  # a window that opens in no zone within this is treated as never open
_SAMPLE = timedelta(hours=6)  # no zone changes its offset twice within 6 hours
_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    """Local times of day in which calls may start: [start_min, end_min) minutes after midnight."""

    start_min: int
    end_min: int  # exclusive; 1440 is the midnight that ends the day

    def __post_init__(self) -> None:
        if not 0 <= self.start_min < self.end_min <= MINUTES_PER_DAY:
            raise ValueError("a calling window needs 00:00 <= start < end <= 24:00")

    @property
    def always(self) -> bool:
        """True for 00:00-24:00: the local time does not matter."""
        return self.start_min == 0 and self.end_min == MINUTES_PER_DAY

    def __str__(self) -> str:
        return f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_window(text: str) -> Window:
    """`HH:MM-HH:MM` (end exclusive, `24:00` allowed) as a Window; ValueError naming the shape."""
    match = _WINDOW_RE.match(text)
    if match is None:
        raise ValueError(f"calling window {text!r} is not HH:MM-HH:MM")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sm > 59 or em > 59 or sh > 23 or eh > 24 or (eh == 24 and em):
        raise ValueError(f"calling window {text!r} has an impossible time")
    return Window(sh * 60 + sm, eh * 60 + em)


def window_of(start: time, end: time) -> Window:
    """The window between two local times of day."""
    return Window(start.hour * 60 + start.minute, end.hour * 60 + end.minute)


def narrowest(windows: Iterable[Window]) -> Window | None:
    """The intersection of windows (the strictest rule wins); None when it is empty."""
    start, end = 0, MINUTES_PER_DAY
    for w in windows:
        start, end = max(start, w.start_min), min(end, w.end_min)
    return Window(start, end) if start < end else None


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone (cached)."""
    return ZoneInfo(name)


def _second_of_day(instant: datetime, tz: ZoneInfo) -> float:
    local = instant.astimezone(tz)
    return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6


def open_in(window: Window, tz: ZoneInfo, instant: datetime) -> bool:
    """True when the local time in `tz` at `instant` is inside the window."""
    second = _second_of_day(instant, tz)
    return window.start_min * 60 <= second < window.end_min * 60


def open_in_all(window: Window, zones: Sequence[str], instant: datetime) -> bool:
    """True when the window is open in every zone at `instant`."""
    return all(open_in(window, zone(name), instant) for name in zones)


def next_opening(window: Window, zones: Sequence[str], now: datetime) -> datetime | None:
    """The first instant >= now at which the window is open in every zone, or None.

    The intersection opens only where some zone's own window opens: where its local time
    reaches the start, or where a DST transition jumps its local time into the window. Every
    such instant within the horizon is a candidate, checked exactly.
    """
    if open_in_all(window, zones, now):
        return now
    candidates: set[datetime] = set()
    for name in zones:
        candidates.update(_openings(window, zone(name), now))
    for instant in sorted(c for c in candidates if c > now):
        if open_in_all(window, zones, instant):
            return instant
    return None


def _openings(window: Window, tz: ZoneInfo, now: datetime) -> set[datetime]:
    """Instants within the horizon at which this zone's window may open."""
    found = set(_transitions(tz, now))
    first_day = now.astimezone(tz).date() - timedelta(days=1)
    wall = time(window.start_min // 60, window.start_min % 60)
    for offset in range(HORIZON_DAYS + 2):
        found.update(_wall_instants(first_day + timedelta(days=offset), wall, tz))
    return found


def _wall_instants(day: date, wall: time, tz: ZoneInfo) -> list[datetime]:
    """The UTC instants at which the local clock shows `day wall` (none in a DST gap, two in
    a repeated hour)."""
    naive = datetime.combine(day, wall)
    instants = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == naive:
            instants.append(instant)
    return instants


def _transitions(tz: ZoneInfo, now: datetime) -> list[datetime]:
    """The instants (to the second) at which the zone's UTC offset changes within the horizon."""
    found = []
    lo = now.astimezone(UTC).replace(microsecond=0)
    end = lo + timedelta(days=HORIZON_DAYS + 1)
    while lo < end:
        hi = lo + _SAMPLE
        if lo.astimezone(tz).utcoffset() != hi.astimezone(tz).utcoffset():
            found.append(_bisect_change(tz, lo, hi))
        lo = hi
    return found


def _bisect_change(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole second in (lo, hi] with hi's offset."""
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi
