"""`dialer migrate`: bring the ledger schema up to date (also done at start-up)."""

from __future__ import annotations

import argparse
import asyncio

from service.errors import ServiceUnreachableError, StoreUnavailableError
from service.ledger.migrate import current_revision, upgrade
from service.logs import configure_logging, mask_text
from service.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dialer migrate`."""
    parser.add_argument(
        "--revision", default="head", help="target revision (default: the latest, head)"
    )
    parser.add_argument(
        "--show", action="store_true", help="print the current revision and change nothing"
    )


def run(args: argparse.Namespace) -> int:
    """Run `dialer migrate`."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.show:
            print(asyncio.run(current_revision(settings)) or "empty")
            return 0
        revision = asyncio.run(upgrade(settings, args.revision))
    except StoreUnavailableError as exc:  # exit 3: the database does not answer
        raise ServiceUnreachableError(f"DIALER_DATABASE_URL: {mask_text(str(exc))}") from exc
    print(f"ledger schema at revision {revision}")
    return 0
