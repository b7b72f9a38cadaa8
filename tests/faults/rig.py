"""One fault scenario's world: its names on the private broker, its fault proxies, its sandbox,
its service processes, its recorder and publisher; and the tally at the end.

    async with Rig(node, "kill-9 sqlite", work_dir, collector) as rig:
        db = await rig.database("sqlite")
        await rig.start_sandbox(latency_ms=50)
        svc = rig.service("a", db)
        await svc.start()
        requests = rig.make_requests(1000)
        await rig.publisher.publish(requests)
        ...inject faults...
        await rig.settle(timeout_s=90)
        tally = await rig.tally()

The service reaches the broker and PostgreSQL only through PartitionProxy instances
(`rig.broker_link`, `rig.pg_link`); the recorder and the publisher go straight to the node,
so a fault on the service's links never hides an event from the tally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tests.faults.launcher import LaunchError, Sandbox, Service, poll
from tests.support.faultbus import (
    EventRecorder,
    Publisher,
    Request,
    delete_names,
    queue_depth,
    with_query,
)
from tests.support.faultproxy import BlandLink, PartitionProxy
from tests.support.leaks import Leak, find_leaks
from tests.support.rabbitnode import RabbitNode
from tests.support.sandbox import free_port
from tests.support.service import FAST_ENV, FAST_SANDBOX, fictional_numbers
from tests.support.tally import Tally, calls_per_request, compute

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SERVICE_RECONNECT_S = 1  # aio-pika's reconnect_interval (URL parameter); its default is 5 s


def postgres_base_url() -> str:
    """The PostgreSQL server for the suite (a database on it is created per scenario)."""
    return os.environ.get("DIALER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


async def _pg_admin(sql: str) -> None:
    parts = urlsplit(postgres_base_url().replace("postgresql+asyncpg", "postgresql"))
    conn = await asyncpg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
        timeout=10,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Collector:
    """What the session gathers: one tally per scenario."""

    tallies: list[Tally] = field(default_factory=list)

    def add(self, tally: Tally) -> None:
        """Record a scenario's tally (printed and written at the end of the session)."""
        self.tallies.append(tally)


def metric_values(text: str, name: str) -> dict[str, float]:
    """Label set -> value of one metric in Prometheus text ('' for no labels)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if match:
            out[match.group(1) or ""] = float(match.group(2))
    return out


class Rig:
    """A scenario's resources; everything it started is stopped and deleted on exit."""

    def __init__(
        self,
        node: RabbitNode,
        name: str,
        work_dir: Path,
        collector: Collector,
        *,
        bind_events: bool = True,
    ) -> None:
        self.node = node
        self.bind_events = bind_events
        self.name = name
        self.work_dir = work_dir
        self.collector = collector
        self.prefix = f"f{uuid.uuid4().hex[:10]}"
        self.api_key = f"sk-faults-{secrets.token_hex(10)}"
        self.webhook_secret = f"whsec-faults-{secrets.token_hex(10)}"
        self.broker_link = PartitionProxy("127.0.0.1", node.amqp_port)
        self.pg_link: PartitionProxy | None = None
        self.bland_link: BlandLink | None = None
        self.sandbox: Sandbox | None = None
        self.services: list[Service] = []
        self.recorder = EventRecorder(node.url, self.prefix)
        self.publisher = Publisher(node.url, self.prefix)
        self.requests: dict[str, Request] = {}
        self.databases: list[str] = []
        self.notes: dict[str, Any] = {}
        self.extra_texts: dict[str, str] = {}  # dead-letter headers etc., scanned for leaks
        self.started = time.monotonic()
        self.timeline: list[tuple[float, str]] = []
        self._tallied = False

    def mark(self, what: str) -> None:
        """Note a moment of the scenario (seconds since the rig opened) for the report."""
        self.timeline.append((round(time.monotonic() - self.started, 1), what))

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Rig:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Proxies up, recorder consuming (so no event is unroutable unless a scenario wants it)."""
        await self.broker_link.start()
        await self.recorder.start(bind=self.bind_events)

    async def close(self) -> None:
        """Stop every process, proxy and connection; delete the scenario's names and databases."""
        await asyncio.gather(*(s.stop() for s in self.services), return_exceptions=True)
        if self.sandbox is not None:
            await self.sandbox.stop(keep_truth=False)
        await self.publisher.close()
        await self.recorder.close()
        for link in (self.broker_link, self.pg_link, self.bland_link):
            if link is not None:
                with contextlib.suppress(Exception):
                    await link.close()
        await delete_names(
            self.node.url,
            self.prefix,
            [f"{self.prefix}.{name}" for name in ("requests", "dead", "tally", "replies")],
        )
        for name in self.databases:
            with contextlib.suppress(Exception):
                await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------ parts

    async def database(self, kind: str) -> str:
        """A fresh ledger: an SQLite file, or a PostgreSQL database reached through `pg_link`."""
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{(self.work_dir / f'ledger-{uuid.uuid4().hex[:6]}.db').as_posix()}"
        if kind != "postgres":
            raise ValueError(kind)
        name = f"f_{uuid.uuid4().hex[:16]}"
        try:
            await _pg_admin(f'CREATE DATABASE "{name}"')
        except (OSError, asyncpg.PostgresError) as exc:
            raise LaunchError(
                f"PostgreSQL is not reachable at {postgres_base_url()}: {exc}"
            ) from exc
        self.databases.append(name)
        base = urlsplit(postgres_base_url())
        if self.pg_link is None:
            self.pg_link = PartitionProxy(base.hostname or "127.0.0.1", base.port or 5432)
            await self.pg_link.start()
        return self.pg_link.url(base._replace(path=f"/{name}").geturl())

    async def prepare_sandbox(self, *, through_link: bool = False, **options: Any) -> Sandbox:
        """The sandbox (fast clock, no plan caps, this rig's secrets) plus options, not started
        yet (its port is known); optionally a BlandLink in front of it for the service."""
        merged = {
            **FAST_SANDBOX,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
            "webhook_retries": 8,  # about 13 s of retries: webhooks outlive a restart
            **options,
        }
        self.sandbox = Sandbox(merged, self.work_dir)
        if through_link:
            self.bland_link = await BlandLink(self.sandbox.port, seed=7).start()
        return self.sandbox

    async def start_sandbox(self, *, through_link: bool = False, **options: Any) -> Sandbox:
        """prepare_sandbox() and start it."""
        sandbox = await self.prepare_sandbox(through_link=through_link, **options)
        await sandbox.start()
        return sandbox

    async def boot(
        self,
        database: str,
        *,
        replicas: int = 1,
        through_link: bool = False,
        sandbox: dict[str, Any] | None = None,
        **env: str,
    ) -> list[Service]:
        """A ledger, the sandbox and `replicas` services (named a, b, ...), all ready.

        The sandbox starts beside the services; the services start one after the other (the
        first one migrates the ledger).
        """
        db = await self.database(database)
        prepared = await self.prepare_sandbox(through_link=through_link, **(sandbox or {}))
        services = [self.service(chr(ord("a") + i), db, **env) for i in range(replicas)]

        async def start_services() -> None:
            for service in services:
                await service.start()

        await asyncio.gather(prepared.start(), start_services())
        self.mark(f"{replicas} service(s) and the sandbox ready")
        return services

    @property
    def service_amqp_url(self) -> str:
        """The node's URL through broker_link, with a 1 s reconnect interval."""
        return with_query(
            self.broker_link.url(self.node.url), reconnect_interval=SERVICE_RECONNECT_S
        )

    def service(self, name: str, database_url: str, **env: str) -> Service:
        """A replica (not started): FAST_ENV, this rig's names, secrets and links."""
        if self.sandbox is None:
            raise LaunchError("start_sandbox() first")
        port = free_port()
        bland_url = (
            self.bland_link.base_url if self.bland_link is not None else self.sandbox.base_url
        )
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
        environment.update(FAST_ENV)
        environment.update(
            DIALER_AMQP_URL=self.service_amqp_url,
            DIALER_PREFIX=self.prefix,
            DIALER_DATABASE_URL=database_url,
            DIALER_BLAND_BASE_URL=bland_url,
            DIALER_BLAND_API_KEY=self.api_key,
            DIALER_WEBHOOK_SECRET=self.webhook_secret,
            DIALER_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bland",
            DIALER_HTTP_PORT=str(port),
            PYTHONUNBUFFERED="1",
        )
        environment.update(env)
        service = Service(name, environment, self.work_dir)
        self.services.append(service)
        return service

    # ------------------------------------------------------------ requests

    def make_requests(
        self,
        count: int,
        *,
        id_prefix: str = "r",
        offset: int = 0,
        extra: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> list[Request]:
        """`count` call.create requests to distinct fictional numbers (not published yet)."""
        numbers = fictional_numbers(offset + count)[offset:]
        out = []
        for number in numbers:
            request_id = f"{id_prefix}-{uuid.uuid4().hex[:16]}"
            body = {"phone_number": number, "task": "Say hello and end the call.", **(extra or {})}
            out.append(
                Request(
                    request_id,
                    json.dumps(body).encode(),
                    properties=dict(properties or {}),
                    phone_number=number,
                )
            )
        return out

    def expect(self, requests: Iterable[Request]) -> None:
        """Count these requests in the tally (published by other means than the publisher)."""
        for request in requests:
            self.requests[request.request_id] = request

    async def publish(self, requests: list[Request], *, per_second: float | None = None) -> None:
        """Publish (paced when per_second is given) and count them in the tally."""
        self.expect(requests)
        if per_second is None:
            await self.publisher.publish(requests)
        else:
            await self.publisher.paced(requests, per_second)

    # ------------------------------------------------------------ waiting

    def lost_ids(self, ids: Iterable[str] | None = None) -> list[str]:
        """Published ids without a final event yet."""
        finals = self.recorder.finals()
        return [rid for rid in (ids if ids is not None else self.requests) if rid not in finals]

    async def settle(
        self,
        timeout_s: float,
        *,
        ids: Iterable[str] | None = None,
        give_up: Callable[[], Awaitable[bool]] | None = None,
    ) -> bool:
        """Wait until every (given) request has a final event; False at the deadline, or as
        soon as `give_up()` says the rest will never come (a known failure, measured)."""
        wanted = list(ids) if ids is not None else list(self.requests)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_check = 0.0
        while self.lost_ids(wanted):
            if loop.time() > deadline:
                self.notes.setdefault("settle_timed_out_s", timeout_s)
                return False
            if give_up is not None and loop.time() >= next_check:
                next_check = loop.time() + 1.0
                if await give_up():
                    self.notes["settle_gave_up_after_s"] = round(
                        timeout_s - (deadline - loop.time()), 1
                    )
                    return False
            await asyncio.sleep(0.1)
        return True

    async def calls(self) -> int:
        """Calls the current sandbox recorded so far."""
        if self.sandbox is None or self.sandbox.current is None:
            return 0
        return int((await self.sandbox.current.acounts())["total"])

    async def wait_calls(self, at_least: int, timeout_s: float) -> None:
        """Until the current sandbox recorded `at_least` calls."""

        async def enough() -> bool:
            return await self.calls() >= at_least

        await poll(
            enough, timeout_s=timeout_s, what=f"{at_least} calls at the sandbox", interval_s=0.02
        )

    async def dead_letter_depth(self) -> int:
        """Messages waiting in `{prefix}.dead`."""
        return await queue_depth(self.node.url, f"{self.prefix}.dead")

    # ------------------------------------------------------------ the end

    async def leaks(self) -> list[Leak]:
        """Phone numbers or secrets in the logs, the metrics, or what the scenario added."""
        texts = {
            f"log {p.name}": p.read_text(errors="replace")
            for s in self.services
            for p in s.log_paths
            if p.exists()
        }
        for service in self.services:
            if service.running:
                texts[f"/metrics {service.name}"] = await service.metrics()
        texts.update(self.extra_texts)
        # Every number the suite ever uses, and any other a scenario published.
        numbers = fictional_numbers(1000) + [
            r.phone_number for r in self.requests.values() if r.phone_number
        ]
        secret_values = {
            "bland_api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
            "amqp_password": self.node.password,
        }
        return find_leaks(texts, numbers, secret_values)

    async def tally(self, **notes: Any) -> Tally:
        """The per-request tally; recorded for the session's table."""
        truths = await self.sandbox.ground_truths() if self.sandbox is not None else []
        leaks = await self.leaks()
        self.notes.update(notes)
        self.notes["leaks"] = [str(leak) for leak in leaks[:10]]
        self.notes["timeline"] = [f"{at}s {what}" for at, what in self.timeline]
        self.notes["event_copies"] = self.recorder.copies
        self.notes["events"] = len(self.recorder.events)
        result = compute(
            self.name,
            self.requests,
            calls_per_request(truths),
            self.recorder.finals(),
            seconds=time.monotonic() - self.started,
            notes=self.notes,
        )
        if not self._tallied:
            self.collector.add(result)
            self._tallied = True
        return result
