"""`dialer events [--follow] [--json]`: print the event stream (events published from now on).

Every mode names each event's type: the plain line starts with it, and `--json` adds it as
`event_type` (on the bus it is the routing key and the AMQP `type`, not a body field).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any, TextIO

from aio_pika.abc import AbstractIncomingMessage

from service.bus.connection import Names, cli_connect, cli_settings
from service.bus.topology import declare
from service.logs import mask_phone
from service.settings import Settings

# Fields worth a glance on a terminal, after the ids, when an event has them.
_DETAIL_FIELDS = (
    "status", "answered_by", "reason", "stage", "http_status", "error_message", "call_length_min",
    "not_before", "expires_at", "recipients",
)  # fmt: skip


def event_line(routing_key: str, body: bytes) -> str:
    """One readable line: time, type, ids, masked number, a few details, errors."""
    try:
        event: dict[str, Any] = json.loads(body)
    except ValueError:
        return f"{routing_key} (not JSON: {len(body)} bytes)"
    parts = [str(event.get("occurred_at", "-")), f"{routing_key:<16}"]
    for key in ("request_id", "call_id", "batch_id", "correlation_id"):
        if event.get(key):
            parts.append(f"{key}={event[key]}")
    if event.get("phone_number"):
        parts.append(f"phone={mask_phone(str(event['phone_number']))}")
    if event.get("duplicate"):
        parts.append("duplicate")
    parts += [f"{key}={event[key]}" for key in _DETAIL_FIELDS if event.get(key) is not None]
    if event.get("errors"):
        parts.append("errors=" + " | ".join(str(e) for e in event["errors"]))
    return " ".join(parts)


def event_json(routing_key: str, body: bytes) -> str:
    """The event's JSON object with its type first; a body that is no JSON object is quoted."""
    try:
        event: Any = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return json.dumps({"event_type": routing_key, "raw": body.decode("utf-8", "replace")})
    return json.dumps({"event_type": routing_key, **event}, ensure_ascii=False)


async def follow(
    settings: Settings,
    out: TextIO,
    *,
    as_json: bool,
    window_s: float | None,
    notes: TextIO | None = None,
) -> int:
    """Bind an exclusive queue to the events exchange and print; stop after window_s if given."""
    printed = 0
    done = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal printed
        key = message.routing_key or message.type or "?"
        if as_json:
            out.write(event_json(key, message.body) + "\n")
        else:
            out.write(event_line(key, message.body) + "\n")
        out.flush()
        printed += 1

    connection = await cli_connect(settings, robust=window_s is None)
    async with connection:
        channel = await connection.channel()
        await declare(channel, settings)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        exchange = Names(settings.prefix).events
        await queue.bind(exchange, "#")
        await queue.consume(on_message, no_ack=True)
        until = "Ctrl-C" if window_s is None else f"{window_s:g} s"
        # On stderr, so stdout stays one event per line (and pure JSON with --json).
        (notes or sys.stderr).write(
            f"listening on {exchange} (every event type) until {until}; "
            "only events published from now on are shown\n"
        )
        (notes or sys.stderr).flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=window_s)
    return printed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dialer events`."""
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing until Ctrl-C")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each event's JSON body, with its type added as event_type",
    )
    parser.add_argument(
        "--window-s",
        type=float,
        default=3.0,
        help="without --follow: listen this long, seconds (default: %(default)s)",
    )
    parser.add_argument("--amqp-url", help="broker URL (default: DIALER_AMQP_URL)")
    parser.add_argument("--prefix", help="exchange and queue name prefix (default: DIALER_PREFIX)")


def run(args: argparse.Namespace) -> int:
    """Print events until Ctrl-C (--follow) or for --window-s seconds."""
    settings = cli_settings(args)
    window_s = None if args.follow else args.window_s
    asyncio.run(follow(settings, sys.stdout, as_json=args.json, window_s=window_s))
    return 0
