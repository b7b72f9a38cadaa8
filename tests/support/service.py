"""`dialer serve` as a real subprocess for end-to-end tests: start, wait ready, SIGTERM, kill -9.

env = service_env(broker=broker, database_url=url, sandbox=sandbox)
svc = start_service(env, log_dir=tmp_path)   # waits for /readyz
...
code, elapsed_s = svc.terminate()            # SIGTERM; exit code and how long it took
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from service.settings import Settings
from tests.support.sandbox import REPO_ROOT, SandboxProcess, free_port

READY_TIMEOUT_S = 120.0  # `dialer serve` imports the whole service: slow on a starved box
# Simulated calls last about 80 s: at 600x that is about 0.15 s of real time.
FAST_SANDBOX: dict[str, Any] = {
    "clock_speed": 600.0,
    "plan": "enterprise",
    "same_number_window_s": 0,  # a double dial must show in the ground truth, not be refused
}
FINAL_EVENTS = ("call.completed", "call.failed", "call.unresolved", "call.canceled")
AREA_CODES = ("212", "312", "415", "617", "202", "305", "503", "702", "206", "404")

# Fast loops for tests: every wait the service has is short.
FAST_ENV: dict[str, str] = {
    "DIALER_LOG_FORMAT": "json",
    "DIALER_LOG_LEVEL": "INFO",
    "DIALER_HTTP_HOST": "127.0.0.1",
    "DIALER_MAX_CONCURRENT_CALLS": "50",
    "DIALER_MAX_CALLS_PER_SECOND": "1000",
    # Tests call their fictional numbers at any hour: no window, and no regional rule (area
    # code 305 is Florida, whose default window would narrow any hour to 08-20 there).
    "DIALER_CALLING_WINDOW": "00:00-24:00",
    "DIALER_REGION_RULES": "{}",
    "DIALER_MAX_CALLS_PER_NUMBER_24H": "0",
    "DIALER_SAME_NUMBER_GAP_S": "0",
    "DIALER_DISPATCH_IDLE_S": "0.05",
    "DIALER_OUTCOME_OVERDUE_S": "3",
    "DIALER_OUTCOME_POLL_EVERY_S": "1",
    "DIALER_WEBHOOK_GRACE_S": "1",
    "DIALER_POLL_INTERVAL_S": "0.5",
    "DIALER_RECONCILE_INTERVAL_S": "0.5",
    "DIALER_RECONCILE_GRACE_S": "5",
    "DIALER_STALE_CLAIM_MARGIN_S": "2",
    "DIALER_RETRY_BACKOFF_BASE_S": "0.05",
    "DIALER_RETRY_BACKOFF_MAX_S": "0.5",
    "DIALER_BLAND_CONNECT_TIMEOUT_S": "1",
    "DIALER_BLAND_READ_TIMEOUT_S": "2",
    "DIALER_SHUTDOWN_GRACE_S": "10",
}


def fictional_numbers(count: int) -> list[str]:
    """Distinct fictional US numbers (555-0100 to 555-0199 in several area codes)."""
    if count > 100 * len(AREA_CODES):
        raise ValueError("not that many fictional numbers")
    return [f"+1{AREA_CODES[i // 100]}55501{i % 100:02d}" for i in range(count)]


def service_env(
    *,
    amqp_url: str,
    prefix: str,
    database_url: str,
    sandbox: SandboxProcess,
    port: int | None = None,
    **overrides: str,
) -> dict[str, str]:
    """The environment of one service process: nothing inherited from the caller's DIALER_*."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    env.update(FAST_ENV)
    env.update(
        DIALER_AMQP_URL=amqp_url,
        DIALER_PREFIX=prefix,
        DIALER_DATABASE_URL=database_url,
        DIALER_BLAND_BASE_URL=sandbox.base_url,
        DIALER_BLAND_API_KEY=sandbox.api_key,
        DIALER_WEBHOOK_SECRET=sandbox.webhook_secret,
        DIALER_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bland",
        DIALER_HTTP_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """One running `dialer serve`."""

    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        """Where its HTTP app listens."""
        return f"http://127.0.0.1:{self.env['DIALER_HTTP_PORT']}"

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """Its JSON log lines."""
        lines = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """Status and body of GET /readyz."""
        response = httpx.get(self.base_url + "/readyz", timeout=5)
        body: dict[str, Any] = response.json()
        return response.status_code, body

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        return httpx.get(self.base_url + "/metrics", timeout=5).text

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait for /readyz 200; fail with the process log otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"service exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if self.readyz()[0] == 200:
                    return
            time.sleep(0.05)
        pytest.fail(f"service not ready within {timeout_s} s:\n{self.log()[-5000:]}")

    def kill9(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if it did not exit within timeout_s, seconds taken)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (cleanup)."""
        if self.process.poll() is None:
            code, _ = self.terminate(timeout_s=15)
            if code is None:
                self.kill9()


def start_service(env: dict[str, str], log_dir: Path, *, wait: bool = True) -> ServiceProcess:
    """Start `dialer serve` with this environment; by default wait for /readyz."""
    log_path = log_dir / f"service-{env['DIALER_HTTP_PORT']}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    service = ServiceProcess(env, process, log_path)
    if wait:
        service.wait_ready()
    return service


StartService = Callable[..., ServiceProcess]


@contextlib.contextmanager
def running_service(env: dict[str, str], log_dir: Path) -> Iterator[ServiceProcess]:
    """A started service, stopped afterwards."""
    service = start_service(env, log_dir)
    try:
        yield service
    finally:
        service.stop()


def call_request(phone_number: str, **extra: Any) -> dict[str, Any]:
    """A minimal valid call.create body."""
    return {"phone_number": phone_number, "task": "Say hello and end the call.", **extra}


def call_requests(count: int, id_prefix: str = "e2e") -> list[tuple[str, bytes]]:
    """(request id, body) of `count` call.create requests to distinct fictional numbers."""
    return [
        (f"{id_prefix}-{uuid.uuid4().hex}", json.dumps(call_request(number)).encode())
        for number in fictional_numbers(count)
    ]


async def publish_many(
    settings: Settings,
    messages: Iterable[tuple[str, bytes]],
    routing_key: str = "call.create",
    **properties: Any,
) -> int:
    """Publish (request id, body) pairs, confirmed, many in flight; returns how many."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{settings.prefix}.requests", ensure=False)
        properties.setdefault("content_type", "application/json")
        pending = [
            exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=request_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    **properties,
                ),
                routing_key=routing_key,
            )
            for request_id, body in messages
        ]
        for start in range(0, len(pending), 500):
            await asyncio.gather(*pending[start : start + 500])
        return len(pending)


def calls_by_request(ground_truth: list[dict[str, Any]]) -> Counter[str]:
    """How many calls the sandbox placed for each of our request ids."""
    counts: Counter[str] = Counter()
    for call in ground_truth:
        metadata = call.get("metadata") or {}
        counts[str(metadata.get("dialer_request_id"))] += 1
    return counts


def latest_by_request(seen: Iterable[Any], event_types: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last event body of the given types per request id (events are at-least-once)."""
    wanted = set(event_types)
    out: dict[str, dict[str, Any]] = {}
    for item in seen:
        if item.routing_key in wanted:
            out[str(item.body["request_id"])] = item.body
    return out


def settled(seen: Iterable[Any], request_ids: Iterable[str]) -> bool:
    """True when every request id has a final event."""
    finals = {str(s.body.get("request_id")) for s in seen if s.routing_key in FINAL_EVENTS}
    return all(request_id in finals for request_id in request_ids)
