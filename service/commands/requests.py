"""The requests of a `dialer publish` file: its format, each row's stable id, every invalid row.

Request ids: `message_id` is a hash of the kind and the row's canonical JSON (the same hash the
consumer uses for a message without id), salted with `--id-salt` when given. Publishing a file
again, or after editing or reordering it, never dials an unchanged row twice; identical rows are
one request. To call the same people again on purpose, pass a new `--id-salt`. `--id-field`
takes the id from a column or key instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.envelope import content_request_id, is_valid_request_id
from service.commands.rows import (
    HeaderError,
    Row,
    csv_records,
    json_records,
    jsonl_records,
    schema_problems,
)


class InputError(ValueError):
    """The file cannot be read as requests; the message names the row."""


@dataclass(frozen=True)
class Outgoing:
    """One request to publish."""

    row: int  # 1-based: the line of a JSONL/CSV file where it starts, the item of a JSON array
    request_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Parsed:
    """The requests of a file, the duplicate rows dropped, and every invalid row by line."""

    items: list[Outgoing]
    duplicates: int
    problems: list[tuple[str, str]]  # (`line 7` or `item 7`, what is wrong)


def detect_format(name: str, text: str) -> str:
    """By extension, else by content: `[` or one JSON object = json, several lines = jsonl."""
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        try:
            json.loads(text)
        except ValueError:
            return "jsonl"
        return "json"
    return "csv"


def _first_problem(rows: list[Row]) -> list[Any]:
    for row in rows:
        if row.problem is not None:
            raise InputError(f"{row.where}: {row.problem}")
    return [row.body for row in rows]


def json_rows(text: str) -> list[Any]:
    """A JSON object or array of objects."""
    return _first_problem(json_records(text))


def jsonl_rows(text: str) -> list[Any]:
    """One JSON object per non-empty line."""
    return _first_problem(jsonl_records(text))


def csv_rows(text: str) -> list[Any]:
    """A header row with `phone_number`; `a.b` columns nest (`request_data.name`); empty = unset."""
    try:
        return _first_problem(csv_records(text))
    except HeaderError as exc:
        raise InputError(str(exc)) from exc


def stable_request_id(kind: str, body: dict[str, Any], salt: str = "") -> str:
    """The row's id: the consumer's content hash, or a salted hash of the same canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if not salt:
        return content_request_id(kind, canonical)
    digest = hashlib.sha256(f"{kind}\n{salt}\n".encode() + canonical).hexdigest()
    return f"sha256:{digest[:40]}"


def read_requests(
    text: str,
    fmt: str,
    *,
    kind: str = "call.create",
    task: str | None = None,
    id_field: str | None = None,
    id_salt: str = "",
    multiline: bool = False,
    validate: bool = True,
) -> Parsed:
    """Every row of a file: the requests, and each invalid row with its line and reasons."""
    if fmt == "csv":
        try:
            rows = csv_records(text, multiline=multiline)
        except HeaderError as exc:
            raise InputError(str(exc)) from exc
    else:
        rows = {"json": json_records, "jsonl": jsonl_records}[fmt](text)
    out: dict[str, Outgoing] = {}
    problems: list[tuple[str, str]] = []
    for row in rows:
        try:
            request_id, body = _request(
                row, kind=kind, task=task, id_field=id_field, salt=id_salt, validate=validate
            )
        except InputError as exc:
            problems.append((row.where, str(exc)))
            continue
        out.setdefault(request_id, Outgoing(row.line, request_id, body))
    valid = len(rows) - len(problems)
    return Parsed(list(out.values()), valid - len(out), problems)


def _request(
    row: Row, *, kind: str, task: str | None, id_field: str | None, salt: str, validate: bool
) -> tuple[str, dict[str, Any]]:
    """One row's request id and body; InputError says what is wrong with it."""
    if row.problem is not None:
        raise InputError(row.problem)
    if not isinstance(row.body, dict):
        raise InputError(f"expected a JSON object, got {type(row.body).__name__}")
    body = dict(row.body)
    if task and kind == "call.create" and "task" not in body and "pathway_id" not in body:
        body["task"] = task
    request_id = _row_id(body, kind, id_field, salt)
    errors = schema_problems(kind, body) if validate else []
    if errors:
        raise InputError(" ".join(errors))
    return request_id, body


def parse_requests(
    text: str,
    fmt: str,
    *,
    kind: str = "call.create",
    task: str | None = None,
    id_field: str | None = None,
    id_salt: str = "",
) -> tuple[list[Outgoing], int]:
    """The requests of a file and how many duplicate rows (same id) were dropped; the first
    unreadable row raises InputError (bodies are not checked against the schemas here)."""
    parsed = read_requests(
        text, fmt, kind=kind, task=task, id_field=id_field, id_salt=id_salt, validate=False
    )
    if parsed.problems:
        where, problem = parsed.problems[0]
        raise InputError(f"{where}: {problem}")
    return parsed.items, parsed.duplicates


def _row_id(body: dict[str, Any], kind: str, id_field: str | None, salt: str) -> str:
    if id_field is None:
        return stable_request_id(kind, body, salt)
    value = body.pop(id_field, None)
    if value is None or not is_valid_request_id(str(value)):
        raise InputError(f"{id_field} must be 1 to 128 printable ASCII characters")
    return str(value)
