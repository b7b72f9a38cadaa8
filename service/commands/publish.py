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
import csv
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aio_pika

from schemas.envelope import REQUEST_KINDS, content_request_id, is_valid_request_id
from service.bus.connection import BROKER_ERRORS, Names, cli_settings
from service.bus.topology import declare
from service.commands.batch_publish import batch_arguments, run_batch
from service.logs import mask_phone
from service.settings import Settings

FORMATS = ("json", "jsonl", "csv")
IN_FLIGHT = 256
# CSV cells in these columns stay strings even when they look like numbers.
TEXT_COLUMNS = frozenset(
    {"phone_number", "from", "transfer_phone_number", "task", "first_sentence", "voice",
     "language", "timezone", "start_time", "pathway_id", "label", "campaign_id"}
)  # fmt: skip
_NUMBER_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


class InputError(ValueError):
    """The file cannot be read as requests; the message names the row."""


@dataclass(frozen=True)
class Outgoing:
    """One request to publish."""

    row: int  # 1-based: line of a JSONL/CSV file, item of a JSON array
    request_id: str
    body: dict[str, Any]


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


def json_rows(text: str) -> list[Any]:
    """A JSON object or array of objects."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}") from exc
    return data if isinstance(data, list) else [data]


def jsonl_rows(text: str) -> list[Any]:
    """One JSON object per non-empty line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise InputError(f"line {number}: not valid JSON: {exc}") from exc
    return rows


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


def csv_rows(text: str) -> list[Any]:
    """A header row with `phone_number`; `a.b` columns nest (`request_data.name`); empty = unset."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "phone_number" not in [f.strip() for f in reader.fieldnames]:
        raise InputError("CSV needs a header row with a phone_number column")
    rows = []
    for record in reader:
        row: dict[str, Any] = {}
        for column, value in record.items():
            if column is None or value is None or not value.strip():
                continue  # extra cells without a header, or empty cells
            _put(row, column.strip(), csv_cell(column.strip(), value))
        rows.append(row)
    return rows


def _put(row: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target = row
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise InputError(f"column {dotted!r} nests under a column that has a value")
    target[leaf] = value


def stable_request_id(kind: str, body: dict[str, Any], salt: str = "") -> str:
    """The row's id: the consumer's content hash, or a salted hash of the same canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if not salt:
        return content_request_id(kind, canonical)
    digest = hashlib.sha256(f"{kind}\n{salt}\n".encode() + canonical).hexdigest()
    return f"sha256:{digest[:40]}"


def parse_requests(
    text: str,
    fmt: str,
    *,
    kind: str = "call.create",
    task: str | None = None,
    id_field: str | None = None,
    id_salt: str = "",
) -> tuple[list[Outgoing], int]:
    """The requests of a file and how many duplicate rows (same id) were dropped."""
    rows = {"json": json_rows, "jsonl": jsonl_rows, "csv": csv_rows}[fmt](text)
    out: dict[str, Outgoing] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InputError(f"row {number}: expected a JSON object, got {type(row).__name__}")
        body = dict(row)
        if task and kind == "call.create" and "task" not in body and "pathway_id" not in body:
            body["task"] = task
        request_id = _row_id(number, body, kind, id_field, id_salt)
        out.setdefault(request_id, Outgoing(number, request_id, body))
    return list(out.values()), len(rows) - len(out)


def _row_id(number: int, body: dict[str, Any], kind: str, id_field: str | None, salt: str) -> str:
    if id_field is None:
        return stable_request_id(kind, body, salt)
    value = body.pop(id_field, None)
    if value is None or not is_valid_request_id(str(value)):
        raise InputError(f"row {number}: {id_field} must be 1 to 128 printable ASCII characters")
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
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
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
    parser.add_argument("--dry-run", action="store_true", help="print ids, publish nothing")
    batch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Parse the file, publish, report."""
    settings = cli_settings(args)
    if args.batch:
        return run_batch(args, settings, csv_cell)
    if args.kind not in REQUEST_KINDS:
        print(f"dialer publish: --kind must be one of {', '.join(REQUEST_KINDS)}", file=sys.stderr)
        return 2
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")  # Excel writes a BOM
        fmt = args.format or detect_format(args.file, text)
        items, duplicates = parse_requests(
            text,
            fmt,
            kind=args.kind,
            task=args.task,
            id_field=args.id_field,
            id_salt=args.id_salt,
        )
    except (OSError, UnicodeDecodeError, InputError) as exc:
        print(f"dialer publish: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for item in items:
            phone = item.body.get("phone_number")
            print(f"{item.row}\t{item.request_id}\t{mask_phone(str(phone)) if phone else ''}")
        return 0
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
    skipped = f", {duplicates} duplicate rows skipped" if duplicates else ""
    target = Names(settings.prefix).requests
    progress.finish(f"published {progress.done} of {len(items)} requests to {target}{skipped}")
    for item, error in failures:
        print(f"row {item.row} ({item.request_id}): not confirmed: {error}", file=sys.stderr)
    return 1 if failures else 0
