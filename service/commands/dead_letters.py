"""`dialer dead-letters list|replay|purge`: what could not be processed, sent back or dropped.

Every action reads the queue to its end, selects by `--id` and `--reason`, and holds the
messages it does not take unacked: they go back to the queue, in order, when it is done. A
replayed message that dies again while replay runs is not replayed twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from service.bus.connection import Names, cli_connect, cli_settings
from service.bus.dead_letters import (
    DeadLetter,
    describe,
    original_routing_key,
    replay_message,
)
from service.bus.topology import Topology, declare
from service.errors import ConfigError
from service.settings import Settings


@dataclass(frozen=True)
class Selection:
    """Which dead letters an action touches: all, or those matching every given filter."""

    message_id: str | None = None
    reason: str | None = None
    limit: int | None = None

    def matches(self, item: DeadLetter) -> bool:
        """True when the dead letter passes the filters."""
        if self.reason is not None and item.reason != self.reason:
            return False
        return self.message_id is None or self.message_id in (item.message_id, item.request_id)


# What an action does with one selected dead letter; True when it took it off the queue.
Action = Callable[[AbstractIncomingMessage, DeadLetter, Topology], Awaitable[bool]]
SCAN_MAX = 100_000  # a queue that fills faster than it is read still ends the scan
RETURN_WAIT_S = 10.0


async def each_selected(
    settings: Settings,
    selection: Selection,
    act: Action,
    *,
    skip: Callable[[DeadLetter], bool] | None = None,
) -> int:
    """Apply `act` to every selected dead letter; return how many were selected.

    Messages are read until the queue has no ready one left; each is held unacked until the
    connection closes (so none is read twice), and those not taken go back in order. The
    command ends only once the broker shows them back in the queue (a quorum queue returns
    them asynchronously), so a command right after sees them.
    """
    connection = await cli_connect(settings)
    done = held = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings)
        for _ in range(SCAN_MAX):
            if selection.limit is not None and done >= selection.limit:
                break
            message = await topology.dead_queue.get(no_ack=False, fail=False)
            if message is None:
                break
            item = describe(message)
            if selection.matches(item) and not (skip is not None and skip(item)):
                done += 1
                if await act(message, item, topology):
                    continue
            held += 1
    if held:
        await _until_returned(settings, held)
    return done


async def _until_returned(settings: Settings, held: int) -> None:
    """Wait (bounded) until the dead-letter queue shows at least the messages we held."""
    connection = await cli_connect(settings)
    async with connection:
        channel = await connection.channel()
        for _ in range(int(RETURN_WAIT_S / 0.05)):
            queue = await channel.declare_queue(Names(settings.prefix).dead, passive=True)
            if int(queue.declaration_result.message_count or 0) >= held:
                return
            await asyncio.sleep(0.05)


def dead_letter_line(number: int, item: DeadLetter) -> str:
    """One line per dead letter; every field is text, whatever bytes the message held."""
    error = f" error={item.error}" if item.error else ""
    return (
        f"{number}\tid={item.message_id or '-'} request_id={item.request_id or '-'} "
        f"reason={item.reason} routing_key={item.routing_key} bytes={item.size} "
        f"replays={item.replays}{error} body={item.preview}"
    )


async def list_dead(
    settings: Settings,
    limit: int,
    out: TextIO,
    *,
    as_json: bool,
    selection: Selection | None = None,
) -> int:
    """Print up to `limit` selected dead letters; they stay in the queue."""
    chosen = Selection(
        message_id=selection.message_id if selection else None,
        reason=selection.reason if selection else None,
        limit=limit,
    )
    count = 0

    async def show(_message: AbstractIncomingMessage, item: DeadLetter, _t: Topology) -> bool:
        nonlocal count
        count += 1
        out.write((json.dumps(asdict(item)) if as_json else dead_letter_line(count, item)) + "\n")
        return False  # listing takes nothing

    await each_selected(settings, chosen, show)
    return count


async def replay(
    settings: Settings,
    limit: int | None,
    reason: str | None,
    out: TextIO,
    *,
    message_id: str | None = None,
    body: bytes | None = None,
    new_id: str | None = None,
) -> int:
    """Republish selected dead letters to the requests exchange (confirmed), then ack them.

    With `body` (a fixed request) the body is replaced, and the message gets a new id: the
    old one is already recorded (as rejected, for a request that was invalid).
    """

    sent: set[tuple[str | None, int]] = set()

    async def send(message: AbstractIncomingMessage, item: DeadLetter, t: Topology) -> bool:
        copy = replay_message(message)
        if body is not None:
            copy = fixed_copy(
                copy, body, new_id or f"{item.message_id or 'dead'}.fix{item.replays + 1}"
            )
        await t.requests_exchange.publish(copy, routing_key=original_routing_key(message))
        await message.ack()
        sent.add((copy.message_id, item.replays + 1))
        out.write(f"replayed id={copy.message_id} routing_key={original_routing_key(message)}\n")
        return True

    # A replayed message that dies again while this runs is not replayed a second time.
    def again(item: DeadLetter) -> bool:
        return (item.message_id, item.replays) in sent

    selection = Selection(message_id=message_id, reason=reason, limit=limit)
    replayed = await each_selected(settings, selection, send, skip=again)
    out.write(f"replayed {replayed} to {Names(settings.prefix).requests}\n")
    return replayed


def fixed_copy(message: aio_pika.Message, body: bytes, message_id: str) -> aio_pika.Message:
    """The replayed message with a corrected body and its new id (properties kept)."""
    return aio_pika.Message(
        body,
        headers=dict(message.headers or {}),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message_id,
        type=message.type,
        app_id=message.app_id,
    )


async def purge(settings: Settings, selection: Selection, out: TextIO) -> int:
    """Delete selected dead letters (acked, gone); print one line each and a total."""

    async def drop(message: AbstractIncomingMessage, item: DeadLetter, _t: Topology) -> bool:
        await message.ack()
        out.write(f"purged id={item.message_id or '-'} reason={item.reason}\n")
        return True

    purged = await each_selected(settings, selection, drop)
    out.write(f"purged {purged} from {Names(settings.prefix).dead}\n")
    return purged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer dead-letters list|replay|purge`."""
    parser.add_argument(
        "action",
        choices=("list", "replay", "purge"),
        help="list (nothing changes), replay to the requests exchange, or purge (delete)",
    )
    parser.add_argument("--id", dest="message_id", help="only the dead letter with this message id")
    parser.add_argument("--reason", help="only dead letters with this reason (e.g. invalid_json)")
    parser.add_argument("--limit", type=int, help="at most N messages (list: default 100)")
    parser.add_argument("--json", action="store_true", help="list: one JSON object per line")
    parser.add_argument(
        "--body",
        type=Path,
        help="replay: send this file's JSON as the fixed body (the message gets a new id)",
    )
    parser.add_argument("--new-id", help="replay --body: the fixed message's id")
    parser.add_argument("--all", action="store_true", help="purge: every dead letter")
    parser.add_argument("--amqp-url", help="broker URL (default: DIALER_AMQP_URL)")
    parser.add_argument("--prefix", help="exchange and queue name prefix (default: DIALER_PREFIX)")


def fixed_body(path: Path) -> bytes:
    """The fixed request's bytes, checked to be a JSON object."""
    try:
        data = path.read_bytes()
        loaded = json.loads(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--body: {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"--body: {path}: a request body is a JSON object")
    return data


def run(args: argparse.Namespace) -> int:
    """List, replay or purge; exit 1 when --id selected nothing."""
    settings = cli_settings(args)
    selection = Selection(message_id=args.message_id, reason=args.reason, limit=args.limit)
    if args.action == "list":
        count = asyncio.run(
            list_dead(
                settings, args.limit or 100, sys.stdout, as_json=args.json, selection=selection
            )
        )
    elif args.action == "replay":
        if args.body is not None and args.message_id is None:
            raise ConfigError("--body: give --id too (one fixed body replaces one message)")
        body = fixed_body(args.body) if args.body is not None else None
        count = asyncio.run(
            replay(
                settings,
                args.limit,
                args.reason,
                sys.stdout,
                message_id=args.message_id,
                body=body,
                new_id=args.new_id,
            )
        )
    else:
        if not (args.all or args.message_id or args.reason):
            raise ConfigError("purge: say what to delete: --id ID, --reason R, or --all")
        count = asyncio.run(purge(settings, selection, sys.stdout))
    if args.message_id is not None and count == 0:
        print(f"dialer: no dead letter with id {args.message_id}", file=sys.stderr)
        return 1
    return 0
