"""Phone numbers: Bland's accepted and refused forms (bland-api.md 2.1), normalised to E.164."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.phone import PhoneNumberError, normalize_phone

INVALID = "Invalid phone number. Please include a country code if outside the US."


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+12223334444", "+12223334444"),
        ("2223334444", "+12223334444"),
        ("+1 (222) 333-4444", "+12223334444"),
        ("222-333-4444", "+12223334444"),
        ("(312) 555-0187", "+13125550187"),
        ("222.333.4444", "+12223334444"),
        ("  +12223334444  ", "+12223334444"),
        (2223334444, "+12223334444"),
        ("+552223334444", "+552223334444"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+33 1 23 45 67 89", "+33123456789"),
    ],
)
def test_accepted_forms_become_e164(value: object, expected: str) -> None:
    assert normalize_phone(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "12223334444",  # 11 digits starting with 1, no '+'
        12223334444,
        "552223334444",  # a country code without '+'
        "call me",
        "",
        "+12223334444 ext. 5",
        "+12223334444x5",
        "+12223334444;5",
        "1-800-FLOWERS",
        "+999123456789",  # no such country code
        "0223334444",  # NANP area codes never start with 0 or 1
        "+12220334444",  # nor exchanges
        "+1222333444",  # 9 national digits
        "22-333-4444+",
        "(222) 333-44444",
    ],
)
def test_refused_forms_give_blands_message(value: object) -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalize_phone(value)
    assert str(caught.value) == INVALID
    assert caught.value.field == "phone_number"


@pytest.mark.parametrize(
    ("value", "problem"), [("+123456", "too short"), ("+1234567890123456789", "too long")]
)
def test_digit_count_outside_7_to_15_names_the_number(value: str, problem: str) -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalize_phone(value)
    assert str(caught.value) == (
        f"Invalid phone number. `{value}` has these validation errors: "
        f'["{problem}: a phone number has 7 to 15 digits"]'
    )


@pytest.mark.parametrize("value", [True, None, 2.5, ["+12223334444"], {"n": 1}])
def test_non_string_non_integer_is_a_type_error(value: object) -> None:
    with pytest.raises(PhoneNumberError, match=r"^Phone number must be a string or number\.$"):
        normalize_phone(value)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("from", "Invalid from number format"),
        ("transfer_phone_number", "Invalid transfer phone number format"),
        ("transfer_list", "Invalid phone number format in transfer list"),
        ("voicemail.sms.to", "Invalid phone number format in voicemail.sms.to"),
    ],
)
def test_each_field_has_its_own_message(field: str, message: str) -> None:
    assert normalize_phone("(222) 333-4444", field) == "+12223334444"
    for bad in ("12223334444", "+1234567890123456789", True):
        with pytest.raises(PhoneNumberError) as caught:
            normalize_phone(bad, field)
        assert str(caught.value) == message


NANP = st.from_regex(r"\A[2-9][0-9]{2}[2-9][0-9]{6}\Z")


@given(NANP, st.sampled_from(["{a}{e}{l}", "({a}) {e}-{l}", "+1 {a} {e} {l}", "{a}.{e}.{l}"]))
def test_us_numbers_in_any_accepted_layout_normalise_alike(digits: str, layout: str) -> None:
    text = layout.format(a=digits[:3], e=digits[3:6], l=digits[6:])
    assert normalize_phone(text) == "+1" + digits
    assert normalize_phone(int(digits)) == "+1" + digits


@given(NANP)
def test_normalising_is_idempotent_and_agrees_with_libphonenumber(digits: str) -> None:
    e164 = normalize_phone(digits)
    assert normalize_phone(e164) == e164
    parsed = phonenumbers.parse(e164, None)
    assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == e164
