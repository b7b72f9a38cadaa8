"""The area-code table matches phonenumbers' geocoding data; regions come from it."""

from __future__ import annotations

from phonenumbers.geodata import GEOCODE_DATA

from service.dialing.area_codes import build, state_of
from service.dialing.us_area_codes import US_AREA_CODE_STATES
from service.dialing.zones import regions_for_number


def test_the_committed_table_is_what_the_installed_phonenumbers_gives() -> None:
    assert (
        build(GEOCODE_DATA) == US_AREA_CODE_STATES
    )  # regenerate: python -m service.dialing.area_codes


def test_state_names_and_city_suffixes_both_give_the_state() -> None:
    assert (state_of("Florida"), state_of("Miami, FL"), state_of("Washington State")) == (
        "FL",
        "FL",
        "WA",
    )
    assert state_of("Ontario") is None
    assert state_of("Toronto, ON") is None


def test_regions_by_area_code_even_where_the_exchange_names_only_a_city() -> None:
    assert regions_for_number("+12065550100") == ("US", "US-WA")  # Seattle: city-only entries
    assert regions_for_number("+13055550100") == ("US", "US-FL")
    assert regions_for_number("+14165550100") == ("CA",)  # Toronto: not a US state
    assert regions_for_number("+442079460000") == ("GB",)
