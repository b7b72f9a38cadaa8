"""`dialer publish leads.csv --batch --base-prompt "…"`: one `batch.create` from a CSV file.

Columns are the placeholders of the base prompt plus `phone_number`; a column named like a
call field (`voice`, `max_duration`, ...) with one value in every row becomes a field of the
whole batch. Every malformed line is reported with its number; nothing is published then.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from schemas.call import CallRequest
from service.commands.rows import csv_cell, header_delimiter

CALL_FIELDS = frozenset(field.alias or name for name, field in CallRequest.model_fields.items()) - {
    "phone_number",
    "task",
}
PROGRESS_EVERY = 1000


class BatchCsvError(ValueError):
    """The CSV cannot be one batch; the message lists every malformed line."""


@dataclass(frozen=True)
class CsvBatch:
    """The batch body and the line each recipient came from (recipient index → line)."""

    body: dict[str, Any]
    lines: list[int]


def batch_from_csv(
    text: str,
    base_prompt: str,
    *,
    shared: dict[str, Any] | None = None,
    progress: TextIO | None = None,
) -> CsvBatch:
    """The legacy batch of a CSV file; BatchCsvError listing every malformed line.

    Column names keep their case: placeholders are case-sensitive, as at Bland.
    """
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=header_delimiter(text), strict=True
    )
    try:
        header = [cell.strip() for cell in next(reader, [])]
    except csv.Error as exc:
        raise BatchCsvError(f"line 1: malformed CSV header ({exc})") from exc
    problems = _header_problems(header)
    if problems:
        raise BatchCsvError("\n".join(problems))
    entries: list[dict[str, Any]] = []
    lines: list[int] = []
    for line, entry in _records(reader, header, problems):
        entries.append(entry)
        lines.append(line)
        if progress is not None and len(entries) % PROGRESS_EVERY == 0:
            progress.write(f"\rread {len(entries)} rows")
    if not entries and not problems:
        problems.append("no recipients: the file has a header but no rows")
    if problems:
        raise BatchCsvError("\n".join(problems))
    body = {"base_prompt": base_prompt, "call_data": entries, **(shared or {})}
    body.update(_lift_shared(entries, lines))
    return CsvBatch(body, lines)


def _records(
    reader: Any, header: list[str], problems: list[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first line, row) of each good record; each malformed one noted in `problems`."""
    end = reader.line_num
    while True:
        line = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"line {line}: malformed CSV ({exc}): an unclosed quote?")
            return
        end = reader.line_num
        problem = _record_problem(cells, header, line, end)
        if problem is not None:
            problems.append(problem)
        elif any(cell.strip() for cell in cells):
            yield line, {c: csv_cell(c, v) for c, v in zip(header, cells, strict=True) if v.strip()}


def _record_problem(cells: list[str], header: list[str], line: int, end: int) -> str | None:
    if not any(cell.strip() for cell in cells):
        return None  # a blank line
    if end > line:
        return f"line {line}: a quoted cell runs over lines {line}-{end} (an unclosed quote merges rows)"  # fmt: skip
    if len(cells) != len(header):
        return f"line {line}: {len(cells)} cells, the header has {len(header)}"
    if not cells[header.index("phone_number")].strip():
        return f"line {line}: phone_number is empty"
    return None


def _header_problems(header: list[str]) -> list[str]:
    if "phone_number" not in header:
        return ["line 1: the header needs a phone_number column"]
    duplicates = sorted({c for c in header if header.count(c) > 1})
    problems = [f"line 1: column {c!r} appears twice" for c in duplicates]
    if "" in header:
        problems.append(f"line 1: column {header.index('') + 1} has no name")
    return problems


def _lift_shared(entries: list[dict[str, Any]], lines: list[int]) -> dict[str, Any]:
    """Call-field columns: one value for the whole batch (a legacy batch shares its fields)."""
    shared: dict[str, Any] = {}
    problems: list[str] = []
    for column in sorted({key for entry in entries for key in entry} & CALL_FIELDS):
        first = entries[0].get(column)
        for entry, line in zip(entries, lines, strict=True):
            if entry.get(column) != first:
                problems.append(
                    f"line {line}: {column} differs from line {lines[0]}: "
                    "a batch shares its call fields (use one value, or a placeholder)"
                )
                break
        for entry in entries:
            entry.pop(column, None)
        if first is not None:
            shared[column] = first
    if problems:
        raise BatchCsvError("\n".join(problems))
    return shared
