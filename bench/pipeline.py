"""Requests through `dialer serve` against a zero-latency sandbox, next to a raw aio-pika baseline.

    python -m bench [--requests 5000] [--database-url URL] [--profile]

Prints requests/s accepted and calls/s dialed by the service, the broker's raw publish and
consume+ack rates measured in the same run, their ratio, and the service's CPU seconds per
1,000 requests. With --profile the service runs under cProfile and the top functions print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx

from sandbox.process import Sandbox, free_port
from service.bus.connection import broker_answers
from service.bus.topology import delete_topology

AREA_CODES = ("212", "312", "415", "617", "202", "305", "503", "702", "206", "404")
COUNTER_RE = r"^{name}\{{[^}}]*{label}[^}}]*\}} ([0-9.e+]+)$"


@dataclass
class Figures:
    """What one run measured (seconds from the first publish)."""

    requests: int
    publish_s: float
    accepted_s: float
    dialed_s: float
    cpu_s: float | None


def numbers(count: int) -> list[str]:
    """Fictional numbers; they repeat, so the sandbox's same-number window is off."""
    return [f"+1{AREA_CODES[(i // 100) % 10]}55501{i % 100:02d}" for i in range(count)]


def counter(metrics: str, name: str, label: str) -> float:
    """The value of one counter series in a Prometheus exposition."""
    pattern = COUNTER_RE.format(name=re.escape(name), label=re.escape(label))
    return sum(float(v) for v in re.findall(pattern, metrics, flags=re.MULTILINE))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sandbox(directory: Path, key: str, secret: str) -> Sandbox:
    """A zero-latency sandbox with no caps, a very fast clock and no same-number window."""
    port = free_port()
    log_path = directory / "sandbox.log"
    argv = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--api-key", key, "--webhook-secret", secret, "--allow-http-webhooks"]
    argv += ["--plan", "enterprise", "--clock-speed", "2000", "--same-number-window-s", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our interpreter, no shell
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}", log_path)
    wait_http(sandbox.base_url + "/_sandbox/health", process)
    return sandbox


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until `url` answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def start_service(
    env: dict[str, str], directory: Path, profile: Path | None
) -> subprocess.Popen[bytes]:
    """`dialer serve` as a process, optionally under cProfile."""
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += ["-m", "service", "serve"]
    log = (directory / "service.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603 - our interpreter, no shell


async def publish(url: str, exchange_name: str, bodies: list[bytes], routing_key: str) -> None:
    """Publish with confirms, many in flight."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = (
            channel.default_exchange
            if not exchange_name
            else await channel.get_exchange(exchange_name, ensure=False)
        )
        for start in range(0, len(bodies), 1000):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=str(uuid.uuid4()),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=routing_key,
                    )
                    for body in bodies[start : start + 1000]
                )
            )


async def baseline(url: str, count: int) -> tuple[float, float]:
    """Raw aio-pika on the same broker: (publish msg/s, consume+ack msg/s), quorum queue."""
    name = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    bodies = [json.dumps({"phone_number": n, "task": "x"}).encode() for n in numbers(count)]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        started = time.perf_counter()
        await publish(url, "", bodies, name)
        publish_s = time.perf_counter() - started
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            json.loads(message.body)
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

        started = time.perf_counter()
        tag = await queue.consume(on_message)
        await done.wait()
        consume_s = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return count / publish_s, count / consume_s


async def through_service(url: str, base_url: str, prefix: str, count: int, pid: int) -> Figures:
    """Publish `count` call.create requests and time acceptance and dialing via /metrics."""
    bodies = [
        json.dumps({"phone_number": n, "task": "Benchmark call."}).encode() for n in numbers(count)
    ]
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    await publish(url, f"{prefix}.requests", bodies, "call.create")
    publish_s = time.perf_counter() - started
    accepted_s = dialed_s = 0.0
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while not dialed_s:
            text = (await client.get("/metrics")).text
            now_s = time.perf_counter() - started
            consumed = counter(text, "dialer_requests_consumed_total", 'outcome="accepted"')
            if not accepted_s and consumed >= count:
                accepted_s = now_s
            if counter(text, "dialer_calls_dialed_total", 'result="queued"') >= count:
                dialed_s = now_s
            if now_s > 600:
                raise RuntimeError(f"not done after 600 s: {consumed} accepted")
            await asyncio.sleep(0.1)
    cpu_after = cpu_seconds(pid)
    cpu_s = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Figures(count, publish_s, accepted_s, dialed_s, cpu_s)


def service_env(
    args: argparse.Namespace,
    *,
    sandbox: Sandbox,
    key: str,
    secret: str,
    port: int,
    prefix: str,
    directory: Path,
) -> dict[str, str]:
    """Settings of the measured service: high limits, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env.update(
        DIALER_AMQP_URL=args.amqp_url,
        DIALER_PREFIX=prefix,
        DIALER_DATABASE_URL=args.database_url
        or f"sqlite+aiosqlite:///{(directory / 'ledger.db').as_posix()}",
        DIALER_BLAND_BASE_URL=sandbox.base_url,
        DIALER_BLAND_API_KEY=key,
        DIALER_WEBHOOK_SECRET=secret,
        DIALER_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bland",
        DIALER_HTTP_HOST="127.0.0.1",
        DIALER_HTTP_PORT=str(port),
        DIALER_MAX_CONCURRENT_CALLS="1000000",  # no admission wait: measure the pipeline
        DIALER_MAX_CALLS_PER_SECOND="100000",
        DIALER_DISPATCH_IDLE_S="0.02",
        DIALER_LOG_LEVEL="WARNING",
        DIALER_LOG_FORMAT="json",
    )
    return env


def report(figures: Figures, raw_publish: float, raw_consume: float) -> None:
    """Print the figures and the ratios to the baseline."""
    accepted = figures.requests / figures.accepted_s
    dialed = figures.requests / figures.dialed_s
    print(f"requests                 {figures.requests}")
    print(f"published (confirmed)    {figures.requests / figures.publish_s:8.0f} msg/s")
    print(f"accepted by the service  {accepted:8.0f} requests/s ({figures.accepted_s:.1f} s)")
    print(f"dialed (call.queued)     {dialed:8.0f} calls/s    ({figures.dialed_s:.1f} s)")
    print(f"baseline publish         {raw_publish:8.0f} msg/s (raw aio-pika, confirms)")
    print(f"baseline consume + ack   {raw_consume:8.0f} msg/s (raw aio-pika, quorum queue)")
    print(f"accepted / baseline      {accepted / raw_consume:8.1%}")
    print(f"dialed / baseline        {dialed / raw_consume:8.1%}")
    if figures.cpu_s is not None:
        per_1000 = figures.cpu_s * 1000 / figures.requests
        print(f"service CPU              {per_1000:8.2f} s per 1,000 requests")


def print_profile(path: Path, top: int = 20) -> None:
    """The functions where the service spent most of its own time."""
    print(f"\nwhere the service's CPU went (cProfile, top {top} by own time):")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)


async def run(args: argparse.Namespace) -> int:
    """Baseline, then the service, on one broker; everything it made is removed."""
    if not await broker_answers(args.amqp_url):
        print(f"bench: no broker at {args.amqp_url}", file=sys.stderr)
        return 1
    raw_publish, raw_consume = await baseline(args.amqp_url, args.requests)
    directory = Path(tempfile.mkdtemp(prefix="dialer-bench-"))
    key, secret, port = secrets.token_hex(8), secrets.token_hex(16), free_port()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    profile = directory / "service.prof" if args.profile else None
    sandbox = start_sandbox(directory, key, secret)
    service = start_service(
        service_env(
            args,
            sandbox=sandbox,
            key=key,
            secret=secret,
            port=port,
            prefix=prefix,
            directory=directory,
        ),
        directory,
        profile,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", service, timeout_s=60)
        figures = await through_service(
            args.amqp_url, f"http://127.0.0.1:{port}", prefix, args.requests, service.pid
        )
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
        sandbox.stop()
        await delete_topology(args.amqp_url, prefix)
    report(figures, raw_publish, raw_consume)
    if profile is not None and profile.exists():
        print_profile(profile)
    print(f"\nlogs and ledger in {directory}")
    return 0


def main() -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--database-url", help="default: SQLite in a temp dir")
    parser.add_argument("--profile", action="store_true", help="run the service under cProfile")
    return asyncio.run(run(parser.parse_args()))
