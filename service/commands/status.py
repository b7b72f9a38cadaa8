"""`dialer status [--json]`: backlog by state, active calls against the limits, last errors,
outbox lag and the broker's queues, read from the ledger and the broker (nothing changes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from service.bus.connection import Names, cli_connect, cli_settings
from service.clock import utcnow
from service.errors import ConfigError, ServiceUnreachableError, StoreUnavailableError
from service.ledger.overview import Overview, OverviewReader
from service.logs import mask_text
from service.settings import Settings

ACTIVE_STATES = ("pending", "dialing", "queued", "unknown")


@dataclass(frozen=True)
class QueueDepth:
    """A queue's ready messages and consumers, or why it could not be read."""

    name: str
    messages: int | None
    consumers: int | None
    problem: str | None = None


async def queue_depths(settings: Settings) -> list[QueueDepth]:
    """The requests and dead-letter queues, read passively (never declared here)."""
    names = Names(settings.prefix)
    try:
        connection = await cli_connect(settings, timeout_s=5.0)
    except ServiceUnreachableError as exc:
        return [QueueDepth(n, None, None, str(exc)) for n in (names.requests, names.dead)]
    depths = []
    async with connection:
        for name in (names.requests, names.dead):
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(name, passive=True)
            except Exception as exc:
                depths.append(QueueDepth(name, None, None, f"not declared ({type(exc).__name__})"))
                continue
            result = declared.declaration_result
            depths.append(QueueDepth(name, result.message_count, result.consumer_count))
            await channel.close()
    return depths


async def read_overview(settings: Settings) -> Overview:
    """The ledger's overview; an unreachable or unmigrated ledger is one clear error."""
    reader = await OverviewReader.open(settings)
    try:
        return await reader.overview(utcnow())
    except StoreUnavailableError as exc:
        raise ServiceUnreachableError(f"DIALER_DATABASE_URL: {mask_text(str(exc))}") from exc
    finally:
        await reader.close()


def _cap(value: int) -> str:
    return str(value) if value else "none"


def report_text(settings: Settings, view: Overview, queues: list[QueueDepth]) -> str:
    """The human-readable report."""
    states = view.by_state
    active = "  ".join(f"{s} {states[s]}" for s in ACTIVE_STATES).replace(
        f"pending {states['pending']}", f"pending {states['pending']} ({view.due} due now)", 1
    )
    finished = "  ".join(f"{s} {n}" for s, n in states.items() if s not in ACTIVE_STATES and n)
    oldest = f", oldest {view.outbox_lag_s:.1f} s old" if view.outbox_pending else ""
    lines = [
        f"status at {view.now.isoformat(timespec='seconds')} (prefix {settings.prefix})",
        f"backlog       {active}",
        f"finished      {finished or 'none'}",
        f"active calls  {view.active_slots} of {settings.max_concurrent_calls} "
        "(DIALER_MAX_CONCURRENT_CALLS)",
        f"dials         {view.dials_last_s} in the last second (limit "
        f"{settings.max_calls_per_second:g}/s, DIALER_MAX_CALLS_PER_SECOND), "
        f"{view.dials_last_min} in the last minute",
        f"              {view.dials_last_hour} in the last hour "
        f"(cap {_cap(settings.max_calls_per_hour)}, DIALER_MAX_CALLS_PER_HOUR), "
        f"{view.dials_last_day} in the last day "
        f"(cap {_cap(settings.max_calls_per_day)}, DIALER_MAX_CALLS_PER_DAY)",
        f"outbox        {view.outbox_pending} event(s) not yet confirmed by the broker{oldest}",
    ]
    for queue in queues:
        if queue.problem is not None:
            lines.append(f"queue         {queue.name}: {queue.problem}")
        else:
            lines.append(
                f"queue         {queue.name}: {queue.messages} message(s), "
                f"{queue.consumers} consumer(s)"
            )
    lines.append("last errors" + ("" if view.recent_errors else "   none"))
    for error in view.recent_errors:
        detail = mask_text(error.errors or "")[:160]
        lines.append(
            f"  {error.at.isoformat(timespec='seconds')} {error.request_id} {error.state} "
            f"{error.reason or '-'} {detail}".rstrip()
        )
    return "\n".join(lines) + "\n"


def report_json(settings: Settings, view: Overview, queues: list[QueueDepth]) -> str:
    """The same report as one JSON object."""
    body: dict[str, Any] = {
        "at": view.now.isoformat(),
        "prefix": settings.prefix,
        "backlog": view.by_state,
        "due": view.due,
        "active_calls": view.active_slots,
        "max_concurrent_calls": settings.max_concurrent_calls,
        "dials_last_s": view.dials_last_s,
        "dials_last_min": view.dials_last_min,
        "dials_last_hour": view.dials_last_hour,
        "dials_last_day": view.dials_last_day,
        "max_calls_per_hour": settings.max_calls_per_hour,
        "max_calls_per_day": settings.max_calls_per_day,
        "max_calls_per_second": settings.max_calls_per_second,
        "outbox_pending": view.outbox_pending,
        "outbox_lag_s": round(view.outbox_lag_s, 3),
        "queues": [asdict(q) for q in queues],
        "last_errors": [
            {**asdict(e), "at": e.at.isoformat(), "errors": mask_text(e.errors or "") or None}
            for e in view.recent_errors
        ],
    }
    return json.dumps(body) + "\n"


async def status(settings: Settings, out: TextIO, *, as_json: bool) -> Overview:
    """Read both sides and print the report."""
    view = await read_overview(settings)
    queues = await queue_depths(settings)
    out.write((report_json if as_json else report_text)(settings, view, queues))
    return view


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dialer status`."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--amqp-url", help="broker URL (default: DIALER_AMQP_URL)")
    parser.add_argument("--prefix", help="exchange and queue name prefix (default: DIALER_PREFIX)")
    parser.epilog = (
        "Reads DIALER_DATABASE_URL (or the SQLite file under DIALER_DATA_DIR) and the broker; "
        "the limits shown are this process's DIALER_* values."
    )


def run(args: argparse.Namespace) -> int:
    """Print the status; exit 3 when the ledger cannot be read."""
    settings = cli_settings(args)
    if settings.database_url is None and not (settings.data_dir / "dialer.db").exists():
        raise ConfigError(
            f"DIALER_DATA_DIR: no ledger at {settings.data_dir / 'dialer.db'} "
            "(set DIALER_DATABASE_URL or DIALER_DATA_DIR to the service's)"
        )
    asyncio.run(status(settings, sys.stdout, as_json=args.json))
    return 0
