"""Phone numbers as Bland accepts them, normalised to E.164."""

from __future__ import annotations

import functools
import re

import phonenumbers

MIN_DIGITS = 7
MAX_DIGITS = 15
US_NATIONAL_DIGITS = 10

# Bland's message for an invalid number, by the field that holds it.
INVALID_MESSAGES: dict[str, str] = {
    "phone_number": "Invalid phone number. Please include a country code if outside the US.",
    "from": "Invalid from number format",
    "transfer_phone_number": "Invalid transfer phone number format",
    "transfer_list": "Invalid phone number format in transfer list",
}
TYPE_MESSAGES: dict[str, str] = {
    "phone_number": "Phone number must be a string or number.",
    "transfer_list": "Invalid phone number format in transfer list",
}

# Digits with the usual separators; a '+' only in front. Letters (vanity numbers,
# extensions such as "x12" or "ext. 12") and ';' or '#' never pass.
_SHAPE_RE = re.compile(r"^\+?[0-9(][0-9 ().\-]*$")
# North American numbering plan: area code and exchange both start with 2-9.
_NANP_RE = re.compile(r"^\+1[2-9][0-9]{2}[2-9][0-9]{6}$")


class PhoneNumberError(ValueError):
    """A number Bland would refuse; `str(exc)` is Bland's message."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def invalid_message(field: str) -> str:
    """Bland's message for an invalid number in `field`."""
    return INVALID_MESSAGES.get(field, f"Invalid phone number format in {field}")


def normalize_phone(value: object, field: str = "phone_number") -> str:
    """E.164 form of `value` (string or integer); raises PhoneNumberError with Bland's message."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PhoneNumberError(TYPE_MESSAGES.get(field, invalid_message(field)), field)
    text = str(value).strip()
    if not _SHAPE_RE.match(text):
        raise PhoneNumberError(invalid_message(field), field)
    digits = re.sub(r"\D", "", text)
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise PhoneNumberError(_count_message(text, len(digits), field), field)
    e164 = _to_e164(text, digits)
    if e164 is None:
        raise PhoneNumberError(invalid_message(field), field)
    return e164


@functools.lru_cache(maxsize=16_384)  # a batch's shared `from` is parsed once, not per recipient
def _to_e164(text: str, digits: str) -> str | None:
    """Parse with the country code given, else as a 10-digit US number; None when not possible."""
    if text.startswith("+"):
        candidate = "+" + digits
    elif len(digits) == US_NATIONAL_DIGITS:
        candidate = "+1" + digits
    else:
        # Bland reads a number without '+' as a US national number: "12223334444" and
        # "552223334444" are refused rather than guessed at.
        return None
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(parsed) != (
        phonenumbers.ValidationResult.IS_POSSIBLE
    ):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if parsed.country_code == 1 and not _NANP_RE.match(e164):
        return None
    return e164


def _count_message(text: str, count: int, field: str) -> str:
    if field != "phone_number":
        return invalid_message(field)
    problem = "too short" if count < MIN_DIGITS else "too long"
    return (
        f"Invalid phone number. `{text}` has these validation errors: "
        f'["{problem}: a phone number has {MIN_DIGITS} to {MAX_DIGITS} digits"]'
    )
