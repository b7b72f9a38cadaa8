"""`dialer demo`: the sandbox and the service together, on the sample calls plus generated ones."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage

from service.amqp import Names
from service.app import App, build
from service.logs import configure_logging, mask_text
from service.settings import Settings, load_settings
from service.states import TERMINAL

NEEDS_A_BROKER = (
    "dialer demo needs RabbitMQ. Set DIALER_AMQP_URL, or start a broker on 127.0.0.1:5672 "
    "(`make services`, or `docker run -d -p 5672:5672 rabbitmq:3.13`), or run where Docker "
    "works with testcontainers installed (`pip install 'testcontainers[rabbitmq]'`)."
)
FINAL_STATES = tuple(sorted(state.value for state in TERMINAL))
# Area codes not used by the sample files, so no number is dialed twice within Bland's 10 s.
AREA_CODES = ("617", "202", "305", "503", "702", "206", "404", "512", "303", "614")
BATCH_ONLY_KEYS = ("base_prompt", "call_data", "label", "campaign_id", "test_mode", "batch_webhook")
STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------ the requests


def example(name: str) -> dict[str, Any]:
    """One of the sample requests shipped in `schemas/examples/`."""
    text = resources.files("schemas").joinpath("examples", name).read_text(encoding="utf-8")
    body: dict[str, Any] = json.loads(text)
    return body


def expand_legacy_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """One call.create per recipient: the prompt as `task`, the recipient's values as `request_data`."""
    shared = {k: v for k, v in batch.items() if k not in BATCH_ONLY_KEYS}
    metadata = {**(batch.get("metadata") or {}), "campaign_id": batch.get("campaign_id")}
    calls = []
    for recipient in batch["call_data"]:
        values = {k: v for k, v in recipient.items() if k != "phone_number"}
        calls.append(
            {
                **shared,
                "phone_number": recipient["phone_number"],
                "task": batch["base_prompt"],
                "request_data": values,
                "metadata": metadata,
            }
        )
    return calls


def sample_calls() -> list[dict[str, Any]]:
    """The shipped samples as call.create bodies, dialed now and without publisher webhooks."""
    full = example("send-call-full.json")
    # Scheduled for a later date and sent to a fictional host: neither suits a one-minute demo.
    for key in ("start_time", "webhook", "webhook_events"):
        full.pop(key, None)
    batch = expand_legacy_batch(example("renewal-reminder-batch.json"))
    return [full, *batch]


def generated_calls(count: int) -> list[dict[str, Any]]:
    """Calls to fictional numbers (555-0100 to 555-0199 in several area codes)."""
    if count > 100 * len(AREA_CODES):
        raise ValueError(f"at most {100 * len(AREA_CODES)} generated calls")
    return [
        {
            "phone_number": f"+1{AREA_CODES[i // 100]}55501{i % 100:02d}",
            "task": "You are calling to confirm tomorrow's delivery window. Be brief.",
            "max_duration": 2,
            "metadata": {"demo_row": i},
        }
        for i in range(count)
    ]


# ------------------------------------------------------------------ the broker


async def broker_answers(url: str, timeout_s: float = 3.0) -> bool:
    """True when a broker accepts a connection at `url`."""
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), timeout_s)
    except Exception:  # any failure means: not this broker
        return False
    await connection.close()
    return True


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


async def delete_topology(url: str, prefix: str) -> None:
    """Delete the demo's queues and exchanges (each on its own channel: a miss closes one)."""
    names = Names(prefix)
    connection = await aio_pika.connect(url)
    async with connection:
        for queue in (names.requests, names.dead):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in (names.requests, names.events, names.dead):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(exchange, if_unused=False)


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
    """An exclusive queue on the events exchange, counting as events arrive."""
    tally = EventTally()
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(Names(prefix).events, "#")
        await queue.consume(tally.on_message, no_ack=True)
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


# ------------------------------------------------------------------ the sandbox


@dataclass
class Sandbox:
    """`dialer sandbox` as a child process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def counts(self) -> dict[str, Any]:
        """The sandbox's ground truth counters."""
        counts: dict[str, Any] = httpx.get(self.base_url + "/_sandbox/counts", timeout=5).json()
        return counts

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sandbox(directory: Path, api_key: str, secret: str, clock_speed: float) -> Sandbox:
    """Start the simulator on a free port with a fast clock and wait until it answers."""
    port = free_port()
    log_path = directory / "sandbox.log"
    argv = [sys.executable, "-m", "service.cli", "sandbox", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--api-key", api_key, "--webhook-secret", secret]
    argv += ["--clock-speed", str(clock_speed), "--plan", "enterprise", "--allow-http-webhooks"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603 - our interpreter, no shell
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sandbox.base_url + "/_sandbox/health", timeout=1).status_code == 200:
                return sandbox
        time.sleep(0.05)
    sandbox.stop()
    raise RuntimeError(f"the sandbox did not start:\n{log_path.read_text(errors='replace')}")


# ------------------------------------------------------------------ the run


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
        dispatch_idle_s=0.05,
        outcome_overdue_s=5.0,
        poll_interval_s=1.0,
        reconcile_interval_s=1.0,
        reconcile_grace_s=20.0,
        shutdown_grace_s=5.0,
        migrate_on_start=True,
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
        sandbox = start_sandbox(directory, key, secret, clock_speed)
        try:
            settings = demo_settings(amqp_url, directory, sandbox, key, secret)
            return await _with_service(settings, sandbox, calls, timeout_s, started)
        finally:
            sandbox.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _with_service(
    settings: Settings, sandbox: Sandbox, calls: int, timeout_s: float, started: float
) -> int:
    amqp_url = settings.amqp_url.get_secret_value()
    app = await build(settings)
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
