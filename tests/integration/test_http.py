"""The HTTP app of the composed service: probes, metrics, webhooks (real broker, ledger, sandbox)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import App
from service.composition import assemble
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import Tap
from tests.support.sandbox import REPO_ROOT, SandboxFactory, SandboxProcess, free_port
from tests.support.service import call_request, fictional_numbers, publish_many
from tests.support.tcpproxy import TcpProxy
from tests.support.waits import until

pytestmark = [pytest.mark.integration]

SECRET = "test-webhook-secret"
Make = Callable[..., Any]


def _sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _settings(broker: Broker, database_url: str, sandbox: SandboxProcess, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "amqp_url": broker.url,
        "prefix": broker.prefix,
        "database_url": database_url,
        "bland_base_url": sandbox.base_url,
        "bland_api_key": sandbox.api_key,
        "webhook_secret": sandbox.webhook_secret,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "shutdown_grace_s": 5.0,
        "outcome_overdue_s": 600.0,  # outcomes in these tests come from webhooks only
        "calling_window": "00:00-24:00",  # fictional 555 numbers, any hour
        **extra,
    }
    return Settings(**values)


@pytest.fixture
async def make_app() -> AsyncIterator[Make]:
    """Build and start apps in this process; stopped afterwards."""
    apps: list[tuple[App, httpx.AsyncClient]] = []

    async def make(settings: Settings) -> tuple[App, httpx.AsyncClient]:
        app = App(await assemble(settings, registry=CollectorRegistry()))
        await app.start()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}", timeout=10)
        apps.append((app, client))
        return app, client

    yield make
    for app, client in apps:
        await client.aclose()
        await app.stop()


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = datetime.now(UTC).timestamp() + timeout_s
    while True:
        response = await client.get("/readyz")
        body: dict[str, Any] = response.json()
        if response.status_code == 200:
            return body
        assert datetime.now(UTC).timestamp() < deadline, body
        await asyncio.sleep(0.05)


async def test_probes_and_metrics_once_everything_is_up(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess, make_app: Make
) -> None:
    _, client = await make_app(_settings(broker, sqlite_url, sandbox))

    assert (await client.get("/healthz")).status_code == 200
    body = await _wait_ready(client)
    assert body["checks"] == {"database": "ok", "broker": "ok", "consumers": "ok"}
    metrics = (await client.get("/metrics")).text
    assert 'dialer_backlog{state="pending"} 0.0' in metrics
    assert "dialer_outbox_pending 0.0" in metrics
    assert "dialer_active_calls 0.0" in metrics


async def test_readyz_names_the_broker_while_it_cannot_be_reached(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess, make_app: Make
) -> None:
    dead_broker = Broker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/", prefix=broker.prefix)
    _, client = await make_app(_settings(dead_broker, sqlite_url, sandbox))

    assert (await client.get("/healthz")).status_code == 200
    body = await _wait_checks(client, lambda c: c.get("broker", "").startswith("unreachable"))
    assert body["checks"]["database"] == "ok"
    assert "broker" in body["not_ready"]
    assert "consumers" in body["not_ready"]


async def _wait_checks(
    client: httpx.AsyncClient, accept: Callable[[dict[str, str]], bool]
) -> dict[str, Any]:
    """The /readyz body once a 503 carries checks that `accept` likes."""
    found: list[dict[str, Any]] = []

    async def answered() -> bool:
        response = await client.get("/readyz")
        body: dict[str, Any] = response.json()
        found[:] = [body]
        return response.status_code == 503 and accept(body["checks"])

    await until(answered, "/readyz: 503 with the awaited checks")
    return found[0]


async def _wait_not_ready(client: httpx.AsyncClient, timeout_s: float = 20.0) -> dict[str, Any]:
    for _ in range(int(timeout_s / 0.1)):
        response = await client.get("/readyz")
        if response.status_code == 503:
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz still 200 after {timeout_s} s")


@pytest.mark.slow
async def test_readyz_says_so_while_the_broker_link_is_black_holed(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess, make_app: Make
) -> None:
    proxy = await TcpProxy.for_url(broker.url).start()
    try:
        through = Broker(url=proxy.url(broker.url), prefix=broker.prefix)
        settings = _settings(through, sqlite_url, sandbox, amqp_heartbeat_s=2)
        _, client = await make_app(settings)
        await _wait_ready(client)

        proxy.blackhole()  # no FIN, no RST: the sockets look connected
        body = await _wait_not_ready(client, timeout_s=10.0)
        assert body["checks"]["broker"].startswith("not answering")

        proxy.restore()
        assert (await _wait_ready(client, timeout_s=60.0))["checks"]["broker"] == "ok"
    finally:
        await proxy.close()


async def test_readyz_names_the_database_while_it_cannot_be_reached(
    broker: Broker, sandbox: SandboxProcess, make_app: Make
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    _, client = await make_app(_settings(broker, url, sandbox))

    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "database" in response.json()["not_ready"]


async def _queued_call(settings: Settings, tap: Tap, request_id: str) -> dict[str, Any]:
    body = json.dumps(call_request(fictional_numbers(1)[0])).encode()
    await publish_many(settings, [(request_id, body)])
    seen = await tap.wait_for(
        lambda s: any(x.routing_key == "call.queued" for x in s), timeout_s=20
    )
    return next(x.body for x in seen if x.routing_key == "call.queued")


async def test_webhooks_are_verified_on_the_raw_body_before_anything_changes(
    broker: Broker, sqlite_url: str, sandbox_factory: SandboxFactory, make_app: Make
) -> None:
    # A slow clock: the real call stays in progress for the whole test.
    sandbox = sandbox_factory(clock_speed=1.0, plan="enterprise", webhook_secret=SECRET)
    app, client = await make_app(_settings(broker, sqlite_url, sandbox))
    await _wait_ready(client)
    tap = await Tap.open(app.settings, f"{broker.prefix}.events")
    try:
        request_id = f"http-{uuid.uuid4().hex}"
        queued = await _queued_call(app.settings, tap, request_id)
        payload = json.dumps(
            {
                "call_id": queued["call_id"],
                "status": "completed",
                "completed": True,
                "queue_status": "complete",
                "answered_by": "human",
                "metadata": {"dialer_request_id": request_id},
            }
        ).encode()

        forged = await client.post(
            "/webhooks/bland", content=payload, headers={"X-Webhook-Signature": _sign(b"x")}
        )
        unsigned = await client.post("/webhooks/bland", content=payload)
        assert (forged.status_code, unsigned.status_code) == (401, 401)
        counts = await app.ledger.counts(datetime.now(UTC))
        assert counts.by_state["queued"] == 1

        garbage = b"{not json"
        bad_json = await client.post(
            "/webhooks/bland", content=garbage, headers={"X-Webhook-Signature": _sign(garbage)}
        )
        assert bad_json.status_code == 400

        good = await client.post(
            "/webhooks/bland", content=payload, headers={"X-Webhook-Signature": _sign(payload)}
        )
        assert good.status_code == 200
        assert good.json()["result"] == "accepted"
        counts = await app.ledger.counts(datetime.now(UTC))
        assert counts.by_state["completed"] == 1
        await tap.wait_for(lambda s: any(x.routing_key == "call.completed" for x in s))

        metrics = (await client.get("/metrics")).text
        assert 'dialer_webhooks_total{result="bad_signature"} 2.0' in metrics
        assert 'dialer_webhooks_total{result="accepted"} 1.0' in metrics
    finally:
        await tap.close()


async def test_oversized_webhooks_are_refused_unread(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess, make_app: Make
) -> None:
    _, client = await make_app(_settings(broker, sqlite_url, sandbox))
    big = b"{" + b" " * (5 * 1024 * 1024) + b"}"

    response = await client.post("/webhooks/bland", content=big)

    assert response.status_code == 413


async def test_batch_status_webhooks_are_accepted_and_checked_when_signed(
    broker: Broker, sqlite_url: str, sandbox: SandboxProcess, make_app: Make
) -> None:
    _, client = await make_app(_settings(broker, sqlite_url, sandbox))
    body = json.dumps({"batch_id": "b-1", "status": "completed"}).encode()

    unsigned = await client.post("/webhooks/bland/batch", content=body)
    signed = await client.post(
        "/webhooks/bland/batch", content=body, headers={"X-Webhook-Signature": _sign(body)}
    )
    forged = await client.post(
        "/webhooks/bland/batch", content=body, headers={"X-Webhook-Signature": _sign(b"other")}
    )
    invalid = await client.post("/webhooks/bland/batch", content=b"[not json")

    assert (unsigned.status_code, signed.status_code) == (200, 200)
    assert forged.status_code == 401
    assert invalid.status_code == 400


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DIALER_HTTP_PORT": "not-a-port"}, "DIALER_HTTP_PORT"),
        ({"DIALER_BLAND_BASE_URL": "ftp://bland"}, "DIALER_BLAND_BASE_URL"),
        ({"DIALER_BLAND_API_KEY": ""}, "DIALER_BLAND_API_KEY"),
        ({"DIALER_DATABASE_URL": "nosuchdb://x/y"}, "DIALER_DATABASE_URL"),
        ({"DIALER_WEBHOOK_URL": "https://example.test/hook"}, "DIALER_WEBHOOK_SECRET"),
    ],
)
def test_serve_exits_2_naming_a_bad_variable(
    env: dict[str, str], variable: str, tmp_path: Path
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    base.update({"DIALER_BLAND_API_KEY": "k", "DIALER_DATA_DIR": str(tmp_path), **env})
    if not base["DIALER_BLAND_API_KEY"]:
        del base["DIALER_BLAND_API_KEY"]

    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=REPO_ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
