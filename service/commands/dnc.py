"""`dialer dnc add|remove|list|import`: the do-not-call list in the ledger."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import TextIO

from schemas.phone import PhoneNumberError, normalize_phone
from service.clock import utcnow
from service.errors import ConfigError
from service.ledger import Ledger
from service.ledger.migrate import upgrade
from service.settings import Settings, load_settings

PAGE = 1000


def phone_or_error(text: str) -> str:
    """The E.164 form, or ConfigError naming the number."""
    try:
        return normalize_phone(text.strip())
    except PhoneNumberError as exc:
        raise ConfigError(f"phone_number {text.strip()!r}: {exc.message}") from exc


def read_entries(lines: TextIO, errors: TextIO) -> tuple[list[tuple[str, str | None]], int]:
    """(number, reason) rows of a file: `number[,reason]` per line, `#` comments, an optional
    header; bad lines are reported (line number and why) and counted, not imported."""
    entries: list[tuple[str, str | None]] = []
    bad = 0
    for line_no, row in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if line_no == 1 and "phone" in cells[0].lower():
            continue
        try:
            entries.append(
                (phone_or_error(cells[0]), cells[1] if len(cells) > 1 and cells[1] else None)
            )
        except ConfigError as exc:
            bad += 1
            errors.write(f"line {line_no}: {exc}\n")
    return entries, bad


def read_file(path: Path) -> tuple[list[tuple[str, str | None]], int]:
    """The entries of a file to import (bad lines reported on stderr)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return read_entries(handle, sys.stderr)


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    await upgrade(settings)
    ledger = await Ledger.open(settings)
    try:
        if args.action == "import":
            entries, bad = read_file(Path(args.number))
            source = f"import:{Path(args.number).name}"
            added = await ledger.dnc_import(entries, now=utcnow(), source=source)
            out.write(f"imported {added} new of {len(entries)} numbers; {bad} lines refused\n")
            return 1 if bad else 0
        return await _act(ledger, args, out)
    finally:
        await ledger.close()


async def _act(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    now = utcnow()
    if args.action == "add":
        phone = phone_or_error(args.number)
        added = await ledger.dnc_add(phone, reason=args.reason, now=now, source="cli")
        out.write(f"{phone} {'added' if added else 'already listed'}\n")
        return 0
    if args.action == "remove":
        phone = phone_or_error(args.number)
        removed = await ledger.dnc_remove(phone, now=now)
        out.write(f"{phone} {'removed' if removed else 'was not listed'}\n")
        return 0
    return await _list(ledger, out, as_json=args.json)


async def _list(ledger: Ledger, out: TextIO, *, as_json: bool) -> int:
    after = ""
    while page := await ledger.dnc_list(after=after, limit=PAGE):
        for e in page:
            if as_json:
                row = {"phone_number": e.phone_number, "reason": e.reason, "source": e.source,
                       "added_at": e.added_at.isoformat()}  # fmt: skip
                out.write(json.dumps(row) + "\n")
            else:
                out.write(f"{e.phone_number}\t{e.added_at:%Y-%m-%dT%H:%M:%SZ}\t{e.reason or ''}\n")
        after = page[-1].phone_number
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer dnc add NUMBER | remove NUMBER | list | import FILE`."""
    parser.add_argument(
        "action",
        choices=("add", "remove", "list", "import"),
        help="add or remove a number, list the list, or import a file of numbers",
    )
    parser.add_argument("number", nargs="?", help="add/remove: the number; import: the file")
    parser.add_argument("--reason", help="add: why (e.g. opt-out by phone)")
    parser.add_argument("--json", action="store_true", help="list: one JSON object per line")
    parser.add_argument("--database-url", help="default: DIALER_DATABASE_URL")


def run(args: argparse.Namespace) -> int:
    """Change or show the list."""
    if args.action != "list" and not args.number:
        raise ConfigError(
            f"dialer dnc {args.action}: a {'FILE' if args.action == 'import' else 'NUMBER'} is required"
        )
    overrides = {"database_url": args.database_url} if args.database_url else {}
    return asyncio.run(_run(args, load_settings(**overrides), sys.stdout))
