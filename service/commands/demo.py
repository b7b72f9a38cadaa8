"""`dialer demo`: the sandbox and the service together, on the sample calls plus generated ones."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from sandbox.process import Sandbox, free_port, start_sandbox
from service.app import App
from service.bus.connection import Names, broker_answers
from service.bus.tap import tap_events
from service.bus.topology import delete_topology
from service.commands.samples import generated_calls, sample_calls
from service.composition import assemble
from service.ledger.states import TERMINAL
from service.logs import configure_logging, mask_text
from service.settings import Settings, load_settings

NEEDS_A_BROKER = (
    "dialer demo needs RabbitMQ. Set DIALER_AMQP_URL, or start a broker on 127.0.0.1:5672 "
    "(`make services`, or `docker run -d -p 5672:5672 rabbitmq:3.13`), or run where Docker "
    "works with testcontainers installed (`pip install 'testcontainers[rabbitmq]'`)."
)
FINAL_STATES = tuple(sorted(state.value for state in TERMINAL))
STARTUP_TIMEOUT_S = 20.0


# ------------------------------------------------------------------ the broker


@contextlib.contextmanager
def container_broker() -> Iterator[str]:
    """A throwaway RabbitMQ in Docker (testcontainers), stopped on exit."""
    from testcontainers.rabbitmq import RabbitMqContainer  # noqa: PLC0415 - optional, Docker only

    container = RabbitMqContainer("rabbitmq:3.13")
    container.start()
    try:
        host = container.get_container_host_ip()
        yield f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"
    finally:
        container.stop()


@dataclass
class EventTally:
    """Counts the events the service publishes, by outcome."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Count one event once (delivery is at-least-once)."""
        if message.message_id in self.seen:
            return
        self.seen.add(message.message_id or "")
        self.total += 1
        label = outcome_label(message.routing_key or "", json.loads(message.body))
        if label is not None:
            self.outcomes[label] += 1


def outcome_label(event_type: str, body: dict[str, Any]) -> str | None:
    """A final event's row in the summary table; None for other events."""
    if event_type == "call.completed":
        status = body.get("status") or "completed"
        if status == "completed":
            return f"completed ({body.get('answered_by') or 'unknown'})"
        return str(status)
    if event_type == "call.failed":
        return f"failed ({body.get('stage')})"
    if event_type in ("call.rejected", "call.suppressed", "call.canceled", "call.expired"):
        return event_type.removeprefix("call.")
    if event_type == "call.unresolved":
        return "unresolved"
    return None


@contextlib.asynccontextmanager
async def tally_events(url: str, prefix: str) -> AsyncIterator[EventTally]:
    """Count the events as they arrive."""
    tally = EventTally()
    async with tap_events(url, prefix, tally.on_message):
        yield tally


async def publish(url: str, prefix: str, bodies: list[dict[str, Any]]) -> list[str]:
    """Publish each body as call.create, confirmed; returns the request ids."""
    ids = [f"demo-{uuid.uuid4()}" for _ in bodies]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(Names(prefix).requests, ensure=False)
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        message_id=request_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="call.create",
                )
                for request_id, body in zip(ids, bodies, strict=True)
            )
        )
    return ids


# ------------------------------------------------------------------ the run


DEMO_PLAN = "enterprise"  # the sandbox's highest caps: the service's own limits are what show


def demo_settings(
    amqp_url: str, directory: Path, sandbox: Sandbox, key: str, secret: str
) -> Settings:
    """The service's settings for the demo: SQLite in a temp dir, a fresh prefix, high limits."""
    port = free_port()
    return load_settings(
        amqp_url=amqp_url,
        database_url=f"sqlite+aiosqlite:///{(directory / 'ledger.db').as_posix()}",
        data_dir=directory,
        prefix=f"demo-{uuid.uuid4().hex[:8]}",
        bland_base_url=sandbox.base_url,
        bland_api_key=key,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/bland",
        webhook_secret=secret,
        http_host="127.0.0.1",
        http_port=port,
        max_concurrent_calls=100,
        max_calls_per_second=500.0,
        # The sandbox calls nobody: the demo runs at any hour (the service's default is 08-21).
        calling_window="00:00-24:00",
        region_rules={},
        dispatch_idle_s=0.05,
        outcome_overdue_s=5.0,
        outcome_poll_every_s=2.0,
        webhook_grace_s=2.0,
        poll_interval_s=1.0,
        reconcile_interval_s=1.0,
        reconcile_grace_s=20.0,
        shutdown_grace_s=5.0,
        migrate_on_start=True,
    )


def conditions_line(settings: Settings, clock_speed: float, plan: str) -> str:
    """What the demo runs with: the service's limits and the sandbox's plan and clock."""
    defaults = Settings.model_fields
    return (
        f"demo: limits {settings.max_concurrent_calls} calls at once "
        f"(DIALER_MAX_CONCURRENT_CALLS; default {defaults['max_concurrent_calls'].default}) and "
        f"{settings.max_calls_per_second:g} dials/s (DIALER_MAX_CALLS_PER_SECOND; default "
        f"{defaults['max_calls_per_second'].default:g}), calling window {settings.calling_window} "
        f"(DIALER_CALLING_WINDOW; default {defaults['calling_window'].default}); sandbox plan "
        f"{plan}, clock x{clock_speed:g} (a 2-minute call lasts {120 / clock_speed:.2g} s)"
    )


def progress_line(by_state: dict[str, int], total: int, elapsed_s: float) -> str:
    """One line: how far along every request is."""
    done = sum(by_state.get(s, 0) for s in FINAL_STATES)
    live = " ".join(
        f"{s} {by_state.get(s, 0)}" for s in ("pending", "dialing", "queued", "unknown")
    )
    return f"{elapsed_s:5.1f}s  {done}/{total} settled | {live}"


async def watch(app: App, total: int, out: TextIO, timeout_s: float) -> bool:
    """Refresh the progress line until every request is settled (True) or time is up."""
    started = time.monotonic()
    last_print = 0.0
    tty = out.isatty()
    while True:
        counts = await app.ledger.counts(datetime.now(UTC))
        known = sum(counts.by_state.values())
        done = sum(counts.by_state.get(s, 0) for s in FINAL_STATES)
        elapsed_s = time.monotonic() - started
        finished = known >= total and done >= total
        if tty or finished or elapsed_s - last_print >= 2.0:
            line = progress_line(counts.by_state, total, elapsed_s)
            out.write(f"\r{line}\033[K" if tty else line + "\n")
            out.flush()
            last_print = elapsed_s
        if finished or elapsed_s > timeout_s:
            if tty:
                out.write("\n")
            return finished
        await asyncio.sleep(0.2)


def summary(tally: EventTally, requests: int, sandbox_calls: int, elapsed_s: float) -> str:
    """The table of outcomes printed at the end."""
    rows = sorted(tally.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    width = max([len(label) for label, _ in rows] + [24])
    lines = [f"{'outcome':<{width}}  calls", f"{'-' * width}  -----"]
    lines += [f"{label:<{width}}  {count:5d}" for label, count in rows]
    lines += [
        f"{'-' * width}  -----",
        f"{'requests published':<{width}}  {requests:5d}",
        f"{'final outcomes':<{width}}  {sum(tally.outcomes.values()):5d}",
        f"{'calls at the sandbox':<{width}}  {sandbox_calls:5d}",
        f"{'events received':<{width}}  {tally.total:5d}",
        f"done in {elapsed_s:.1f} s",
    ]
    return "\n".join(lines)


async def run_demo(amqp_url: str, calls: int, clock_speed: float, timeout_s: float) -> int:
    """Sandbox + service + requests; 0 when every request settled and each was one call."""
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="dialer-demo-"))
    key, secret = f"demo-{secrets.token_hex(8)}", secrets.token_hex(16)
    try:
        options = ["--clock-speed", str(clock_speed), "--plan", DEMO_PLAN]
        sandbox = start_sandbox(directory, key, secret, options)
        try:
            settings = demo_settings(amqp_url, directory, sandbox, key, secret)
            print(conditions_line(settings, clock_speed, DEMO_PLAN))
            return await _with_service(settings, sandbox, calls, timeout_s, started)
        finally:
            sandbox.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _with_service(
    settings: Settings, sandbox: Sandbox, calls: int, timeout_s: float, started: float
) -> int:
    amqp_url = settings.amqp_url.get_secret_value()
    app = App(await assemble(settings))
    try:
        await app.start()
        await asyncio.wait_for(_until_ready(app), STARTUP_TIMEOUT_S)
        bodies = [*sample_calls(), *generated_calls(calls)]
        print(
            f"demo: sandbox {sandbox.base_url}, service http://127.0.0.1:{app.port}, "
            f"prefix {settings.prefix}"
        )
        async with tally_events(amqp_url, settings.prefix) as tally:
            ids = await publish(amqp_url, settings.prefix, bodies)
            print(
                f"demo: published {len(ids)} call.create requests "
                f"({len(bodies) - calls} from schemas/examples, {calls} generated)"
            )
            finished = await watch(app, len(ids), sys.stdout, timeout_s)
            await _until_counted(tally, len(ids))
    finally:
        await app.stop()
        with contextlib.suppress(Exception):
            await delete_topology(amqp_url, settings.prefix)
    sandbox_calls = int(sandbox.counts()["total"])
    print(summary(tally, len(ids), sandbox_calls, time.monotonic() - started))
    if not finished:
        print("demo: not every request settled in time", file=sys.stderr)
        return 1
    if sandbox_calls != len(ids) - tally.outcomes.get("rejected", 0):
        print("demo: calls at the sandbox differ from the requests dialed", file=sys.stderr)
        return 1
    return 0


async def _until_ready(app: App) -> None:
    while True:
        checks = await app.readiness()
        if all(v == "ok" for v in checks.values()):
            return
        if app.started.done():
            app.started.result()
        await asyncio.sleep(0.05)


async def _until_counted(tally: EventTally, total: int, timeout_s: float = 5.0) -> None:
    """The last final events may still be on their way from the outbox."""
    for _ in range(int(timeout_s / 0.05)):
        if sum(tally.outcomes.values()) >= total:
            return
        await asyncio.sleep(0.05)


async def _main(args: argparse.Namespace) -> int:
    url = args.amqp_url or load_settings().amqp_url.get_secret_value()
    if await broker_answers(url):
        return await run_demo(url, args.calls, args.clock_speed, args.timeout_s)
    print(f"demo: no broker answers at {mask_text(url)}; trying Docker", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(container_broker())
        except Exception as exc:  # no testcontainers, no Docker, no image: one clear message
            reason = f"{type(exc).__name__}: {mask_text(str(exc))[:300]}"
            print(f"{NEEDS_A_BROKER}\n({reason})", file=sys.stderr)
            return 1
        return await run_demo(url, args.calls, args.clock_speed, args.timeout_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo options."""
    parser.add_argument("--calls", type=int, default=300, help="generated calls (%(default)s)")
    parser.add_argument(
        "--clock-speed", type=float, default=600.0, help="sandbox seconds per real second"
    )
    parser.add_argument("--timeout-s", type=float, default=45.0, help="give up after this long")
    parser.add_argument("--amqp-url", help="default: DIALER_AMQP_URL or a local broker")


def run(args: argparse.Namespace) -> int:
    """Run the demo; only errors from the service reach the terminal."""
    configure_logging("ERROR", "console")
    return asyncio.run(_main(args))
