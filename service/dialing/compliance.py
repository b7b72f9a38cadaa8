"""Pure compliance screen at dial time: do-not-call, frequency cap, calling window, same number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from service.dialing.windows import (
    Window,
    narrowest,
    next_opening,
    open_in_all,
    parse_window,
    window_of,
)
from service.dialing.zones import regions_for_number, zones_for_number
from service.ledger.records import Candidate, NumberFacts, Screened
from service.settings import Settings


@dataclass(frozen=True)
class RegionRule:
    """A region's stricter rules (e.g. `US-FL`: 08:00-20:00, 3 calls per 24 h)."""

    window: Window | None = None
    max_calls_per_24h: int | None = None


@dataclass(frozen=True)
class Rules:
    """Every compliance rule of the service, from the settings."""

    window: Window
    max_calls_per_24h: int  # 0: no cap
    same_number_gap_s: float
    regions: Mapping[str, RegionRule] = field(default_factory=dict)


def rules_from(settings: Settings) -> Rules:
    """The rules the settings configure."""
    regions = {
        key: RegionRule(
            window=parse_window(rule.calling_window) if rule.calling_window else None,
            max_calls_per_24h=rule.max_calls_per_24h,
        )
        for key, rule in settings.region_rules.items()
    }
    return Rules(
        window=parse_window(settings.calling_window),
        max_calls_per_24h=settings.max_calls_per_number_24h,
        same_number_gap_s=settings.same_number_gap_s,
        regions=regions,
    )


def applicable(candidate: Candidate, rules: Rules) -> tuple[Window | None, int, str]:
    """The strictest window, the strictest 24 h cap (0: none) and the rule's name."""
    windows = [rules.window]
    names = ["global"]
    if candidate.options.calling_window is not None:
        cw = candidate.options.calling_window
        windows.append(window_of(cw.start, cw.end))
        names.append("request")
    caps = [rules.max_calls_per_24h] if rules.max_calls_per_24h > 0 else []
    for region in regions_for_number(candidate.phone_number):
        rule = rules.regions.get(region)
        if rule is None:
            continue
        if rule.window is not None:
            windows.append(rule.window)
            names.append(region)
        if rule.max_calls_per_24h is not None and rule.max_calls_per_24h > 0:
            caps.append(rule.max_calls_per_24h)
    return narrowest(windows), min(caps, default=0), "+".join(names)


def verdict(candidate: Candidate, facts: NumberFacts, rules: Rules, now: datetime) -> Screened:
    """What compliance says about dialing this candidate now."""
    rid = candidate.request_id
    if facts.do_not_call:
        return Screened(rid, "suppress", "do_not_call", rule="do_not_call")
    window, cap, rule = applicable(candidate, rules)
    if cap and facts.calls_24h >= cap:
        return Screened(rid, "suppress", "frequency_cap", rule=f"{cap} per 24 h")
    closed = _window_verdict(candidate, window, rule, now)
    if closed is not None:
        return closed
    if facts.last_call_at is not None:
        free_at = facts.last_call_at + timedelta(seconds=rules.same_number_gap_s)
        if free_at > now:
            return Screened(rid, "hold", "same_number", free_at)
    return Screened(rid, "go")


def _window_verdict(
    candidate: Candidate, window: Window | None, rule: str, now: datetime
) -> Screened | None:
    """None when the window is open in every zone the recipient may be in."""
    rid = candidate.request_id
    if window is None:
        return Screened(rid, "suppress", "no_calling_window", rule=rule)
    if window.always:
        return None
    zone = candidate.options.recipient_timezone
    zones = (zone,) if zone else zones_for_number(candidate.phone_number)
    if not zones:
        return Screened(rid, "suppress", "no_time_zone", rule=rule)
    if candidate.starts_at is not None and candidate.starts_at > now:
        return _scheduled_verdict(candidate, window, zones, rule)
    return _open_or_deferred(rid, window, zones, rule, now)


def _open_or_deferred(
    rid: str, window: Window, zones: tuple[str, ...], rule: str, now: datetime
) -> Screened | None:
    """None when open now; else deferred to the next opening (suppressed when there is none)."""
    opening = next_opening(window, zones, now)
    if opening == now:
        return None
    if opening is None:
        return Screened(rid, "suppress", "no_calling_window", rule=f"{rule} {window}")
    return Screened(rid, "defer", "calling_window", opening, rule=f"{rule} {window}")


def _scheduled_verdict(
    candidate: Candidate, window: Window, zones: tuple[str, ...], rule: str
) -> Screened | None:
    """A call Bland starts at `start_time`: the window must be open then, not now."""
    assert candidate.starts_at is not None  # noqa: S101 - the caller checked
    if open_in_all(window, zones, candidate.starts_at):
        return None
    reason = "start_time_outside_window"
    return Screened(candidate.request_id, "suppress", reason, rule=f"{rule} {window}")


def screen_round(
    candidates: Sequence[Candidate],
    facts: Mapping[str, NumberFacts],
    rules: Rules,
    now: datetime,
    wanted: int,
) -> list[Screened]:
    """Verdicts in claim order until `wanted` may go; a number that goes counts as called now."""
    seen = dict(facts)
    out: list[Screened] = []
    going = 0
    for candidate in candidates:
        if going >= wanted:
            break
        known = seen.get(candidate.phone_number, NumberFacts())
        result = verdict(candidate, known, rules, now)
        out.append(result)
        if result.verdict == "go":
            going += 1
            seen[candidate.phone_number] = replace(
                known, calls_24h=known.calls_24h + 1, last_call_at=now
            )
    return out
