"""`dialer publish FILE`: one request per call, each with a stable id, publisher-confirmed.

The file's rows and their ids: `service.commands.requests`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import aio_pika

from schemas.envelope import REQUEST_KINDS
from service.bus.connection import BROKER_ERRORS, Names, cli_connect, cli_settings
from service.bus.topology import declare
from service.commands.batch_publish import batch_arguments, run_batch
from service.commands.requests import InputError, Outgoing, Parsed, detect_format, read_requests
from service.logs import mask_phone, mask_text
from service.settings import Settings

FORMATS = ("json", "jsonl", "csv")
IN_FLIGHT = 256


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
