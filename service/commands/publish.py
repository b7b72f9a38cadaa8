"""`dialer publish FILE`: one request per call, each with a stable id, publisher-confirmed.

Request ids: `message_id` is a hash of the kind and the row's canonical JSON (the same hash the
consumer uses for a message without id), salted with `--id-salt` when given. Publishing a file
again, or after editing or reordering it, never dials an unchanged row twice; identical rows are
one request. To call the same people again on purpose, pass a new `--id-salt`. `--id-field`
takes the id from a column or key instead.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aio_pika

from schemas.envelope import REQUEST_KINDS, content_request_id, is_valid_request_id
from service.bus.connection import BROKER_ERRORS, Names, cli_connect, cli_settings
from service.bus.topology import declare
from service.commands.batch_publish import batch_arguments, run_batch
from service.commands.rows import (
    HeaderError,
    Row,
    csv_records,
    json_records,
    jsonl_records,
    schema_problems,
)
from service.logs import mask_phone, mask_text
from service.settings import Settings

FORMATS = ("json", "jsonl", "csv")
IN_FLIGHT = 256


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


# ---------------------------------------------------------------- parsing (pure)


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


# ---------------------------------------------------------------- publishing


class Progress:
    """A plain progress bar on a terminal; one summary line otherwise."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total, self.stream, self.width, self.done = total, stream, width, 0
        self.live = stream.isatty()

    def step(self, n: int = 1) -> None:
        """Count n more confirmed."""
        self.done += n
        if self.live:
            filled = self.width * self.done // max(1, self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\rpublish [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def finish(self, message: str) -> None:
        """End the bar with a summary."""
        self.stream.write(("\n" if self.live else "") + message + "\n")
        self.stream.flush()


def request_message(
    item: Outgoing, kind: str, correlation_id: str | None, reply_to: str | None
) -> aio_pika.Message:
    """The AMQP message of one request."""
    return aio_pika.Message(
        json.dumps(item.body, separators=(",", ":")).encode(),
        message_id=item.request_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        type=kind,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=datetime.now(UTC),
        app_id="dialer-publish",
    )


async def publish_all(
    settings: Settings,
    items: list[Outgoing],
    *,
    kind: str,
    correlation_id: str | None,
    reply_to: str | None,
    progress: Progress,
) -> list[tuple[Outgoing, str]]:
    """Publish with confirms, IN_FLIGHT at a time; return the failures."""
    failures: list[tuple[Outgoing, str]] = []
    connection = await cli_connect(settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings)
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def one(item: Outgoing) -> None:
            async with limit:
                message = request_message(item, kind, correlation_id, reply_to)
                try:
                    await topology.requests_exchange.publish(message, routing_key=kind)
                except BROKER_ERRORS as exc:
                    failures.append((item, repr(exc)))
                else:
                    progress.step()

        await asyncio.gather(*(one(item) for item in items))
    return failures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dialer publish`."""
    parser.add_argument("file", help="JSON object or array, JSONL, or CSV with phone_number")
    parser.add_argument("--format", choices=FORMATS, help="default: from the extension/content")
    parser.add_argument(
        "--kind", "--routing-key", dest="kind", default="call.create", help="request kind"
    )
    parser.add_argument("--task", help="task for rows that have neither task nor pathway_id")
    parser.add_argument("--correlation-id", help="correlation_id of every request")
    parser.add_argument("--reply-to", help="queue that also receives each request's events")
    parser.add_argument("--amqp-url", help="default: DIALER_AMQP_URL")
    parser.add_argument("--prefix", help="default: DIALER_PREFIX")
    parser.add_argument("--id-field", help="take each request id from this key (removed)")
    parser.add_argument("--id-salt", default="", help="new salt = new ids: dial the rows again")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check every row with the service's own schemas and print its id; publish nothing",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="publish the valid rows even when some are invalid (those are listed, not sent)",
    )
    parser.add_argument(
        "--multiline",
        action="store_true",
        help="CSV: allow quoted cells with line breaks (refused by default: an unclosed quote "
        "would merge rows)",
    )
    parser.epilog = (
        "CSV: a header row naming the fields (any case; a.b nests), the delimiter , ; tab or | "
        "read from the header. Every row is checked before anything is sent: an invalid row is "
        "reported with its line and, unless --skip-invalid, nothing is published (exit 1)."
    )
    batch_arguments(parser)


def report_problems(name: str, parsed: Parsed, out: TextIO) -> None:
    """One line per invalid row: `FILE line N: what is wrong`."""
    for where, problem in parsed.problems:
        out.write(f"dialer publish: {name} {where}: {mask_text(problem)}\n")


def run(args: argparse.Namespace) -> int:
    """Parse and check every row, then publish (or not), report."""
    settings = cli_settings(args)
    if args.batch:
        return run_batch(args, settings)
    if args.kind not in REQUEST_KINDS:
        print(f"dialer publish: --kind must be one of {', '.join(REQUEST_KINDS)}", file=sys.stderr)
        return 2
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")  # Excel writes a BOM
        fmt = args.format or detect_format(args.file, text)
        parsed = read_requests(
            text,
            fmt,
            kind=args.kind,
            task=args.task,
            id_field=args.id_field,
            id_salt=args.id_salt,
            multiline=args.multiline,
        )
    except (OSError, UnicodeDecodeError, InputError) as exc:
        print(f"dialer publish: {args.file}: {exc}", file=sys.stderr)
        return 2
    report_problems(args.file, parsed, sys.stderr)
    invalid = len(parsed.problems)
    items = parsed.items
    if args.dry_run:
        for item in items:
            phone = item.body.get("phone_number")
            print(f"{item.row}\t{item.request_id}\t{mask_phone(str(phone)) if phone else ''}")
        print(
            f"dry run: {len(items)} valid request(s), {invalid} invalid row(s); nothing published",
            file=sys.stderr,
        )
        return 1 if invalid else 0
    if invalid and not args.skip_invalid:
        print(
            f"dialer publish: nothing published: {invalid} invalid row(s) in {args.file} "
            "(fix them, or pass --skip-invalid to publish the rest)",
            file=sys.stderr,
        )
        return 1
    progress = Progress(len(items), sys.stderr)
    failures = asyncio.run(
        publish_all(
            settings,
            items,
            kind=args.kind,
            correlation_id=args.correlation_id,
            reply_to=args.reply_to,
            progress=progress,
        )
    )
    notes = [f"{parsed.duplicates} duplicate rows skipped"] if parsed.duplicates else []
    notes += [f"{invalid} invalid rows skipped"] if invalid else []
    skipped = f", {', '.join(notes)}" if notes else ""
    target = Names(settings.prefix).requests
    progress.finish(f"published {progress.done} of {len(items)} requests to {target}{skipped}")
    for item, error in failures:
        print(f"line {item.row} ({item.request_id}): not confirmed: {error}", file=sys.stderr)
    return 1 if failures else 0
