"""`dialer publish FILE.csv --batch --base-prompt "…"`: the whole file as one `batch.create`.

The request id is a hash of the batch (salted with `--id-salt`) unless `--batch-id` names it:
publishing the same file again dials nobody again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from schemas.envelope import content_request_id, is_valid_request_id
from service.bus.connection import BROKER_ERRORS, Names
from service.bus.topology import declare
from service.commands.batch_csv import BatchCsvError, batch_from_csv
from service.settings import Settings

KIND = "batch.create"


def batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--batch` options of `dialer publish`."""
    group = parser.add_argument_group("batches (CSV: one batch.create for the whole file)")
    group.add_argument("--batch", action="store_true", help="publish the CSV as one batch")
    group.add_argument("--base-prompt", help="the task; {{column}} is each row's value")
    group.add_argument("--batch-id", help="request id of the batch (default: a content hash)")
    group.add_argument("--label", help="label of the batch")
    group.add_argument("--dispatch", choices=("expand", "bland"), help="override the service's")
    group.add_argument("--all-or-nothing", action="store_true", help="one bad row rejects all")


def batch_request_id(body: dict[str, Any], salt: str) -> str:
    """The consumer's content hash of the batch; salted, a new id for the same rows."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if not salt:
        return content_request_id(KIND, canonical)
    return "sha256:" + hashlib.sha256(f"{KIND}\n{salt}\n".encode() + canonical).hexdigest()[:40]


def batch_body(args: argparse.Namespace, text: str) -> tuple[dict[str, Any], int]:
    """The batch.create body of the file and its recipient count; BatchCsvError when malformed."""
    if not args.base_prompt:
        raise BatchCsvError("--batch needs --base-prompt")
    shared: dict[str, Any] = {"label": args.label} if args.label else {}
    progress = sys.stderr if sys.stderr.isatty() else None
    batch = batch_from_csv(text, args.base_prompt, shared=shared, progress=progress)
    options: dict[str, Any] = {}
    if args.dispatch:
        options["dispatch"] = args.dispatch
    if args.all_or_nothing:
        options["all_or_nothing"] = True
    body = {**batch.body, **({"dialer": options} if options else {})}
    return body, len(batch.lines)


def run_batch(args: argparse.Namespace, settings: Settings) -> int:
    """Read the CSV, publish one batch.create, report its id."""
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
        body, recipients = batch_body(args, text)
    except (OSError, UnicodeDecodeError, BatchCsvError) as exc:
        print(f"dialer publish: {args.file}: {exc}", file=sys.stderr)
        return 2
    request_id = args.batch_id or batch_request_id(body, args.id_salt)
    if not is_valid_request_id(request_id):
        print("dialer publish: --batch-id must be 1 to 128 printable ASCII", file=sys.stderr)
        return 2
    size_kib = len(json.dumps(body)) / 1024
    if args.dry_run:
        print(f"{request_id}\t{recipients} recipients\t{size_kib:.0f} KiB")
        return 0
    try:
        asyncio.run(publish_batch(settings, request_id, body, args))
    except BROKER_ERRORS as exc:
        print(f"dialer publish: batch {request_id} not confirmed: {exc!r}", file=sys.stderr)
        return 1
    target = Names(settings.prefix).requests
    print(
        f"published batch {request_id} ({recipients} recipients, {size_kib:.0f} KiB) to {target}",
        file=sys.stderr,
    )
    return 0


async def publish_batch(
    settings: Settings, request_id: str, body: dict[str, Any], args: argparse.Namespace
) -> None:
    """One confirmed, persistent batch.create."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings)
        message = aio_pika.Message(
            json.dumps(body, separators=(",", ":")).encode(),
            message_id=request_id,
            correlation_id=args.correlation_id,
            reply_to=args.reply_to,
            type=KIND,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
            app_id="dialer-publish",
        )
        await topology.requests_exchange.publish(message, routing_key=KIND)
