"""The Bland sandbox as a real separate process, for integration tests.

Use the `sandbox` fixture (defaults, or options through indirect parametrisation) or the
`sandbox_factory` fixture to start one or more with options::

    @pytest.mark.parametrize("sandbox", [{"plan": "start", "concurrency_mode": "reject"}],
                             indirect=True)
    def test_x(sandbox: SandboxProcess) -> None: ...

    def test_y(sandbox_factory: SandboxFactory) -> None:
        sb = sandbox_factory(error_5xx_share=0.5, seed=7)

Options are the `dialer sandbox` flags with underscores (`clock_speed=600`,
`allow_http_webhooks=True`); True adds a bare flag, False or None leaves it out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.waits import DEADLINE_S

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0  # a process start imports the package: slow on a busy box
DEFAULT_OPTIONS: dict[str, Any] = {
    "api_key": "test-api-key",
    "webhook_secret": "test-webhook-secret",
    "clock_speed": 200.0,
    "seed": 1,
    "allow_http_webhooks": True,
    "webhook_retry_delay_s": 0.05,
    "webhook_timeout_s": 2.0,
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_quiet(counts: dict[str, Any]) -> bool:
    """No work in progress in these /_sandbox/counts."""
    return not (counts["posts_in_flight"] or counts["live_calls"] or counts["pending_webhooks"])


def command_line(options: dict[str, Any]) -> list[str]:
    """`python -m sandbox` with the options as flags."""
    argv = [sys.executable, "-m", "sandbox"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


@dataclass
class SandboxProcess:
    """A started sandbox: where it is, its credentials, and admin helpers."""

    base_url: str
    api_key: str
    webhook_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Headers that authenticate against this sandbox."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> Any:
        response = httpx.get(self.base_url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def _send(self, method: str, path: str, body: object | None = None) -> Any:
        response = httpx.request(method, self.base_url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    # sync helpers
    def ground_truth(self) -> list[dict[str, Any]]:
        """Every call the sandbox recorded (phone_number, metadata, created_at, status, …)."""
        calls: list[dict[str, Any]] = self._get("/_sandbox/calls")["calls"]
        return calls

    def counts(self) -> dict[str, Any]:
        """Calls, rejections, concurrency and work in progress (GET /_sandbox/counts)."""
        counts: dict[str, Any] = self._get("/_sandbox/counts")
        return counts

    def quiet(self) -> bool:
        """No POST being answered, no live call, no webhook pending: nothing more will happen."""
        return is_quiet(self.counts())

    def requests(self) -> list[dict[str, Any]]:
        """Every POST /v1/calls the sandbox received: outcome, status_code, phone_number,
        call_id (outcome `queued`, `dropped`, or the rejection: auth, invalid, fault_5xx,
        fault_429, same_number, rate_cap, concurrency)."""
        attempts: list[dict[str, Any]] = self._get("/_sandbox/requests")["requests"]
        return attempts

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt the sandbox made (or lost on purpose)."""
        deliveries: list[dict[str, Any]] = self._get("/_sandbox/webhooks")["deliveries"]
        return deliveries

    def set_faults(self, **knobs: float) -> dict[str, Any]:
        """Change fault knobs (latency_ms, error_5xx_share, rate_limit_429_share, drop_share,
        webhook_loss_share, webhook_retries); returns all knobs."""
        faults: dict[str, Any] = self._send("PUT", "/_sandbox/faults", knobs)
        return faults

    def set_outcomes(self, **shares: float) -> dict[str, Any]:
        """Change outcome shares (human, voicemail, no_answer, busy, failed)."""
        result: dict[str, Any] = self._send("PUT", "/_sandbox/outcomes", shares)
        return result

    def reset(self) -> None:
        """Forget every call and counter; faults and shares back to their start-up values."""
        self._send("POST", "/_sandbox/reset")

    def get_call(self, call_id: str) -> dict[str, Any]:
        """GET /v1/calls/{call_id} as a client would."""
        response = httpx.get(f"{self.base_url}/v1/calls/{call_id}", headers=self.headers)
        response.raise_for_status()
        call: dict[str, Any] = response.json()
        return call

    def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float = DEADLINE_S, interval_s: float = 0.05
    ) -> None:
        """Poll `predicate` until it holds; fail the test after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"sandbox condition not met within {timeout_s} s")
            time.sleep(interval_s)

    # async helpers
    async def _aget(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            response = await client.get(path)
            response.raise_for_status()
            return response.json()

    async def _asend(self, method: str, path: str, body: object | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

    async def aground_truth(self) -> list[dict[str, Any]]:
        """Async ground_truth()."""
        calls: list[dict[str, Any]] = (await self._aget("/_sandbox/calls"))["calls"]
        return calls

    async def acounts(self) -> dict[str, Any]:
        """Async counts()."""
        counts: dict[str, Any] = await self._aget("/_sandbox/counts")
        return counts

    async def aquiet(self) -> bool:
        """Async quiet()."""
        return is_quiet(await self.acounts())

    async def arequests(self) -> list[dict[str, Any]]:
        """Async requests()."""
        attempts: list[dict[str, Any]] = (await self._aget("/_sandbox/requests"))["requests"]
        return attempts

    async def awebhooks(self) -> list[dict[str, Any]]:
        """Async webhooks()."""
        deliveries: list[dict[str, Any]] = (await self._aget("/_sandbox/webhooks"))["deliveries"]
        return deliveries

    async def aset_faults(self, **knobs: float) -> dict[str, Any]:
        """Async set_faults()."""
        faults: dict[str, Any] = await self._asend("PUT", "/_sandbox/faults", knobs)
        return faults

    async def aset_outcomes(self, **shares: float) -> dict[str, Any]:
        """Async set_outcomes()."""
        result: dict[str, Any] = await self._asend("PUT", "/_sandbox/outcomes", shares)
        return result

    async def areset(self) -> None:
        """Async reset()."""
        await self._asend("POST", "/_sandbox/reset")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _wait_healthy(sandbox: SandboxProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if sandbox.process.poll() is not None:
            raise RuntimeError(
                f"sandbox exited with {sandbox.process.returncode}:\n{sandbox.log()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sandbox.base_url + "/_sandbox/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    sandbox.stop()
    raise RuntimeError(f"sandbox not healthy within {STARTUP_TIMEOUT_S} s:\n{sandbox.log()}")


def start_sandbox(log_dir: Path | None = None, **options: Any) -> SandboxProcess:
    """Start `python -m sandbox` on a free port and wait until it answers."""
    merged = {**DEFAULT_OPTIONS, **options}
    port = int(merged.pop("port", None) or free_port())
    merged.update(host="127.0.0.1", port=port)
    directory = log_dir or Path(tempfile.mkdtemp(prefix="sandbox-"))
    log_path = directory / f"sandbox-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            command_line(merged),
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    api_key = merged.get("api_key")
    sandbox = SandboxProcess(
        base_url=f"http://127.0.0.1:{port}",
        api_key=api_key[0] if isinstance(api_key, list | tuple) else str(api_key or "any-key"),
        webhook_secret=str(merged.get("webhook_secret") or ""),
        process=process,
        log_path=log_path,
        options=merged,
    )
    _wait_healthy(sandbox)
    return sandbox


SandboxFactory = Callable[..., SandboxProcess]


@pytest.fixture(scope="module")
def module_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """One default sandbox for a whole test module; call reset() between tests.

    A module can make its `sandbox` fixture a reset view of it, to save a process start:
    `@pytest.fixture def sandbox(module_sandbox): module_sandbox.reset(); return module_sandbox`.
    """
    started = start_sandbox(log_dir=tmp_path_factory.mktemp("sandbox"))
    yield started
    started.stop()


@dataclass(frozen=True)
class Received:
    """One webhook as it arrived: path, headers and the exact raw body."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime

    def signature_valid(self, secret: str) -> bool:
        """X-Webhook-Signature is the hex HMAC-SHA256 of the raw body under `secret`."""
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-webhook-signature", ""), expected)


class WebhookReceiver:
    """A tiny HTTP server in a thread that records every POST and answers `status_codes`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status_codes: list[int] = []  # answers to the next POSTs, then 200
        self.delay_s = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, datetime.now(UTC)))
                    status = receiver.status_codes.pop(0) if receiver.status_codes else 200
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL to use as a webhook (append any path)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> WebhookReceiver:
        """Start serving."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def bodies(self, path: str | None = None) -> list[bytes]:
        """Raw bodies received (on one path, if given)."""
        with self._lock:
            return [r.body for r in self.received if path is None or r.path == path]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A started WebhookReceiver, closed after the test."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.close()


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[SandboxFactory]:
    """Start sandboxes with options; all are terminated after the test."""
    started: list[SandboxProcess] = []

    def start(**options: Any) -> SandboxProcess:
        sandbox = start_sandbox(log_dir=tmp_path, **options)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, sandbox_factory: SandboxFactory) -> SandboxProcess:
    """One sandbox with the defaults, or with the options of an indirect parameter."""
    options: dict[str, Any] = getattr(request, "param", None) or {}
    return sandbox_factory(**options)
