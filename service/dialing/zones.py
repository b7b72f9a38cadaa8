"""Pure: a phone number's candidate time zones and regions, from `phonenumbers` data."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from service.dialing.us_area_codes import US_AREA_CODE_STATES

UNKNOWN_ZONE = "Etc/Unknown"


def _parse(e164: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None


@lru_cache(maxsize=4096)
def _area_zones(prefix: str) -> frozenset[str]:
    """Every zone any number block under this area prefix maps to."""
    return frozenset(
        z for key, zones in TIMEZONE_DATA.items() if key.startswith(prefix) for z in zones
    )


def _known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=65536)
def zones_for_number(e164: str) -> tuple[str, ...]:
    """Every zone the called party may be in; () when unknown.

    The number's own zones plus every zone anywhere in its geographic area code: the
    exchange-level data is incomplete (270-555 says New York only, though area code 270 is
    partly Central time), and a window must be open in all of them.
    """
    parsed = _parse(e164)
    if parsed is None:
        return ()
    zones = set(timezone.time_zones_for_number(parsed))
    area_len = phonenumbers.length_of_geographical_area_code(parsed)
    if area_len > 0 and zones != {UNKNOWN_ZONE}:
        national = phonenumbers.national_significant_number(parsed)
        zones |= _area_zones(f"{parsed.country_code}{national[:area_len]}")
    zones.discard(UNKNOWN_ZONE)
    return tuple(sorted(z for z in zones if _known(z)))


@lru_cache(maxsize=65536)
def regions_for_number(e164: str) -> tuple[str, ...]:
    """The number's region keys, widest first: the ISO country (`US`), then a US state (`US-FL`)."""
    parsed = _parse(e164)
    if parsed is None:
        return ()
    country = phonenumbers.region_code_for_number(parsed)
    if not country:
        return ()
    if country != "US":
        return (country,)
    # Every US area code lies in one state (service/dialing/area_codes.py).
    state = US_AREA_CODE_STATES.get(phonenumbers.national_significant_number(parsed)[:3])
    return (country, f"US-{state}") if state else (country,)
