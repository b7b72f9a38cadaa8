"""Look for phone numbers and secrets where they must never appear (logs, dead-letter
headers, metric labels).

A NANP number is searched in every common spelling: E.164, bare digits with and without the
country code, (212) 555-0100, 212-555-0100, 212.555.0100, 212 555 0100, +1 212-555-0100, and
URL-encoded. A masked number (`+1212***0100`) matches none of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def phone_forms(e164: str) -> set[str]:
    """The spellings of one number that a log line might carry."""
    digits = re.sub(r"\D", "", e164)
    forms = {e164, digits, "%2B" + digits, "%2b" + digits}
    if len(digits) == 11 and digits.startswith("1"):
        area, exchange, line = digits[1:4], digits[4:7], digits[7:]
        national = f"{area}{exchange}{line}"
        forms |= {
            national,
            f"({area}) {exchange}-{line}",
            f"({area}){exchange}-{line}",
            f"{area}-{exchange}-{line}",
            f"{area}.{exchange}.{line}",
            f"{area} {exchange} {line}",
            f"+1 {area}-{exchange}-{line}",
            f"+1 ({area}) {exchange}-{line}",
            f"+1 {area} {exchange} {line}",
            f"1-{area}-{exchange}-{line}",
            f"+1-{area}-{exchange}-{line}",
        }
    return forms


@dataclass(frozen=True)
class Leak:
    """Where something sensitive was found."""

    where: str
    what: str  # "phone" or the secret's name
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what} in …{self.excerpt}…"


# Anything that may spell a number: digits with the usual separators, maybe a '+' or %2B.
_CANDIDATE = re.compile(r"(?:%2[Bb]|\+)?\(?\d[\d ().-]{5,24}\d")


def _national(number: str) -> str | None:
    digits = re.sub(r"\D", "", number)
    if len(digits) == 11 and digits.startswith("1"):
        return digits[1:]
    return digits if len(digits) == 10 else None


def find_leaks(
    texts: Mapping[str, str],
    phone_numbers: Iterable[str],
    secrets: Mapping[str, str],
    *,
    limit: int = 50,
) -> list[Leak]:
    """Occurrences (up to `limit`) of a number in any spelling, or of a secret, in the texts.

    One pass per text: every digit run (with separators) is reduced to its digits, and each
    10-digit window is looked up among the numbers' national forms (phone_forms spells them).
    """
    nationals = {n for n in (_national(p) for p in phone_numbers) if n}
    found: list[Leak] = []
    for where, text in texts.items():
        for match in _CANDIDATE.finditer(text):
            raw = match.group(0)
            digits = re.sub(r"\D", "", raw[3:] if raw[:3].lower() == "%2b" else raw)
            if any(digits[i : i + 10] in nationals for i in range(len(digits) - 9)):
                start = max(0, match.start() - 60)
                found.append(
                    Leak(where, "phone", text[start : match.end() + 20].replace("\n", " "))
                )
                if len(found) >= limit:
                    return found
        for name, value in secrets.items():
            index = text.find(value) if value else -1
            if index >= 0:
                excerpt = text[max(0, index - 60) : index + len(value) + 20].replace("\n", " ")
                found.append(Leak(where, name, excerpt))
                if len(found) >= limit:
                    return found
    return found
