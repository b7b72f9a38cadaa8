"""Request rows from a file, each with its line, and what is wrong with a row (pure).

CSV: the delimiter is read from the header line (`,` `;` tab `|`), header names are matched
case-insensitively (`Phone Number` = `phone_number`; nested keys after a dot keep their case),
and a malformed record (an unclosed quote, a quoted cell that swallows the next lines, too
many or too few cells) is reported with its line number instead of being merged or dropped.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.batch import validate_batch_create
from schemas.envelope import CancelRequest
from schemas.validation import BlandValidationError, bland_messages, validate_call_create

DELIMITERS = (",", ";", "\t", "|")
# CSV cells in these columns stay strings even when they look like numbers.
TEXT_COLUMNS = frozenset(
    {"phone_number", "from", "transfer_phone_number", "task", "first_sentence", "voice",
     "language", "timezone", "start_time", "pathway_id", "label", "campaign_id"}
)  # fmt: skip
_NUMBER_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


@dataclass(frozen=True)
class Row:
    """One record of the file: its first line, its object, or why it is none."""

    line: int
    body: Any = None
    problem: str | None = None
    unit: str = "line"  # "item" for the objects of a JSON array

    @property
    def where(self) -> str:
        """`line 7` or `item 7`."""
        return f"{self.unit} {self.line}"


def header_delimiter(text: str) -> str:
    """The delimiter that splits the header line most often (`,` on a tie or a single column)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def column_name(raw: str) -> str:
    """A header cell as a field path: the top-level name lower-cased, `a b`/`a-b` → `a_b`."""
    top, dot, rest = raw.strip().partition(".")
    return re.sub(r"[\s-]+", "_", top.strip().lower()) + dot + rest.strip()


def csv_cell(column: str, value: str) -> Any:
    """A CSV cell as JSON: true/false, numbers, JSON objects/arrays; text columns stay text."""
    text = value.strip()
    if column.rsplit(".", maxsplit=1)[-1] in TEXT_COLUMNS:
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _NUMBER_RE.match(text):
        return float(text) if "." in text else int(text)
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class HeaderError(ValueError):
    """The header row cannot be used; nothing in the file can be read."""


def csv_records(text: str, *, required: str = "phone_number", multiline: bool = False) -> list[Row]:
    """Every record of a CSV text with a header row, each with its line number."""
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=header_delimiter(text), strict=True
    )
    columns = _header(reader, required)
    rows: list[Row] = []
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            last = max(start, len(text.splitlines()))
            rows.append(Row(start, problem=_unreadable(start, last, exc)))
            return rows
        end, previous_end = reader.line_num, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        rows.append(_record(columns, cells, start, end, multiline))


def _unreadable(start: int, last: int, exc: csv.Error) -> str:
    """What a reader error means for the rows: most often a quote left open."""
    if "unexpected end of data" in str(exc):
        span = f"line {start}" if last == start else f"lines {start}-{last}"
        return f"a quote opened on this line is never closed: {span} cannot be read as rows"
    return f"malformed CSV ({exc})"


def _header(reader: Any, required: str) -> list[str]:
    try:
        raw: list[str] = next(reader, [])
    except csv.Error as exc:
        raise HeaderError(f"line 1: malformed CSV header ({exc})") from exc
    columns = [column_name(cell) for cell in raw]
    if required not in columns:
        raise HeaderError(f"CSV needs a header row with a {required} column")
    twice = sorted({c for c in columns if c and columns.count(c) > 1})
    if twice:
        raise HeaderError(f"line 1: column {twice[0]} appears twice in the header")
    return columns


def _record(columns: list[str], cells: list[str], start: int, end: int, multiline: bool) -> Row:
    if end > start and not multiline:
        return Row(
            start,
            problem=f"a quoted cell runs over lines {start}-{end} (a quote left open merges "
            "rows; close it, or pass --multiline if the line breaks are meant)",
        )
    if len(cells) != len(columns):
        return Row(start, problem=f"{len(cells)} cells, but the header has {len(columns)}")
    body: dict[str, Any] = {}
    for column, value in zip(columns, cells, strict=True):
        if not column or not value.strip():
            continue  # an unnamed column, or an empty cell: unset
        problem = _put(body, column, csv_cell(column, value))
        if problem is not None:
            return Row(start, problem=problem)
    return Row(start, body)


def _put(row: dict[str, Any], dotted: str, value: Any) -> str | None:
    *parents, leaf = dotted.split(".")
    target = row
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return f"column {dotted!r} nests under a column that has a value"
    target[leaf] = value
    return None


def json_records(text: str) -> list[Row]:
    """A JSON object or array of objects (rows numbered from 1 by position)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Row(exc.lineno, problem=f"not valid JSON: {exc}")]
    items = data if isinstance(data, list) else [data]
    return [Row(n, item, unit="item") for n, item in enumerate(items, 1)]


def jsonl_records(text: str) -> list[Row]:
    """One JSON object per non-empty line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(Row(number, json.loads(line)))
        except ValueError as exc:
            rows.append(Row(number, problem=f"not valid JSON: {exc}"))
    return rows


def _cancel(body: object) -> object:
    try:
        return CancelRequest.model_validate(body)
    except ValidationError as exc:
        raise BlandValidationError(bland_messages(exc)) from None


VALIDATORS: dict[str, Callable[[object], object]] = {
    "call.create": validate_call_create,
    "call.cancel": _cancel,
    "batch.create": validate_batch_create,
}


def schema_problems(kind: str, body: object) -> list[str]:
    """What the service's own schemas say is wrong with a request body (empty: valid)."""
    validate = VALIDATORS.get(kind)
    if validate is None:
        return []
    try:
        validate(body)
    except BlandValidationError as exc:
        return list(exc.errors)
    return []
