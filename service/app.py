"""`App`: the parts of one service process, started in dependency order and stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

import structlog
import uvicorn

from service.backoff import Backoff
from service.bus.connection import BROKER_ERRORS, broker_config_error
from service.composition import Parts
from service.errors import ConfigError, StoreUnavailableError
from service.ledger import Ledger
from service.ledger.migrate import upgrade
from service.logs import mask_text
from service.metrics import Metrics
from service.settings import Settings

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
RETRYABLE: tuple[type[BaseException], ...] = (StoreUnavailableError, *BROKER_ERRORS)
START_RETRY_MAX_S = 5.0
FLUSH_READ_TIMEOUT_S = 2.0
HTTP_STOP_S = 3.0
CLOSE_S = 0.5  # each connection close may take this long after the drain deadline


class _Restartable(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP port now, so a port in use is a clear start-up error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"DIALER_HTTP_PORT: cannot listen on {host}:{port}: {exc}") from exc
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: SIGTERM drains every part, not only HTTP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class App:
    """Starts the parts it is given (HTTP first, so probes answer) and drains them on stop."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.server: uvicorn.Server | None = None
        self.port: int | None = None
        self._workers_started = False
        self._bring_up: asyncio.Task[None] | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        """The settings every part was built with."""
        return self.parts.settings

    @property
    def ledger(self) -> Ledger:
        """The ledger."""
        return self.parts.ledger

    @property
    def metrics(self) -> Metrics:
        """The metrics registry's wrapper."""
        return self.parts.metrics

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        """Listen on HTTP at once (probes answer), then bring the rest up in the background."""
        sock = listen_socket(self.settings.http_host, self.settings.http_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.parts.http,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(HTTP_STOP_S),
        )
        self.server = _Server(config)
        self._serving = asyncio.create_task(self.server.serve([sock]), name="http")
        while not self.server.started:
            if self._serving.done():
                self._serving.result()
                raise ConfigError(f"DIALER_HTTP_PORT: the HTTP server did not start on {self.port}")
            await asyncio.sleep(0.01)
        self._bring_up = asyncio.create_task(self._start_parts(), name="bring-up")

    @property
    def started(self) -> asyncio.Task[None]:
        """The background start-up; it fails only on a configuration error."""
        if self._bring_up is None:
            raise RuntimeError("App.start() was not called")
        return self._bring_up

    async def readiness(self) -> dict[str, str]:
        """database, broker, consumers: "ok" or what is wrong."""
        return await self.parts.health.checks()

    async def _start_parts(self) -> None:
        p = self.parts
        if self.settings.migrate_on_start:
            await self._retry("database", lambda: upgrade(self.settings))
        await self._retry("database", p.ledger.ping)
        await self._retry("broker", lambda: self._start_part("relay", p.relay))
        for worker in (p.dispatcher, p.poller, p.reconciler, p.retention, p.batches):
            await worker.start()
        self._workers_started = True
        await self._retry("broker", lambda: self._start_part("consumer", p.consumer))
        log.info("service_started", http_port=self.port, prefix=self.settings.prefix)

    async def _retry(self, part: str, start: Callable[[], Awaitable[_T]]) -> _T:
        """Keep trying while the broker or the database is unreachable (readiness says so)."""
        retry = Backoff(0.2, START_RETRY_MAX_S)
        while True:
            try:
                result = await start()
            except RETRYABLE as exc:
                problem = broker_config_error(exc, self.settings.amqp_url.get_secret_value())
                if problem is not None:
                    raise problem from exc
                reason = mask_text(str(exc)) or type(exc).__name__
                self.parts.health.waiting[part] = f"unreachable: {reason}"
                delay_s = retry.next_s()
                log.warning("start_waiting", part=part, error=reason, retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                continue
            self.parts.health.waiting.pop(part, None)
            return result

    async def _start_part(self, name: str, part: _Restartable) -> None:
        """Start a broker-facing part; clean up after a failed attempt so it can start again."""
        try:
            await part.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await part.stop(0.1)
            raise
        self.parts.health.started.add(name)

    # ------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Drain within shutdown_grace_s: intake, then dials and rounds, HTTP, then events."""
        p = self.parts
        loop = asyncio.get_running_loop()
        grace_s = self.settings.shutdown_grace_s
        # A fifth of the grace is kept for closing connections and the interpreter's exit on
        # a starved machine: the orchestrator kills the process at the grace, not after it.
        deadline = loop.time() + grace_s * 0.8

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - loop.time()) * share)

        p.health.stopping = True
        p.health.close()
        if self._bring_up is not None and not self._bring_up.done():
            self._bring_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bring_up
        if "consumer" in p.health.started:
            await p.consumer.stop(left(0.3))
        if self._workers_started:
            reserve_s = min(2.0, grace_s * 0.2)
            await asyncio.gather(
                p.dispatcher.stop(max(0.05, left() - reserve_s)),
                p.poller.stop(left(0.5)),
                p.reconciler.stop(left(0.5)),
                p.retention.stop(left(0.5)),
                p.batches.stop(left(0.5)),
            )
        # HTTP before the last flush: a webhook taken after it would leave an event unsent
        # until the next start (Bland retries refused webhooks; the poller covers the rest).
        await self._stop_http(left(0.3))
        if "relay" in p.health.started:
            await self._flush_outbox(deadline)
            await p.relay.stop(left())
        for close in (p.webhooks.aclose, p.bland.aclose, p.ledger.close):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(close(), left() + CLOSE_S)
        log.info("service_stopped")

    async def _flush_outbox(self, deadline: float) -> None:
        """Let the relay publish what was written during the drain, while time remains."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline - 0.2:
            try:
                counts = await asyncio.wait_for(
                    self.ledger.counts(self.parts.clock()), FLUSH_READ_TIMEOUT_S
                )
            except Exception as exc:  # the database is gone: nothing more can be flushed
                log.warning("outbox_flush_stopped", error=str(exc))
                return
            if counts.outbox_pending == 0:
                return
            await asyncio.sleep(0.05)
        log.warning("outbox_not_flushed")

    async def _stop_http(self, timeout_s: float) -> None:
        if self.server is None or self._serving is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._serving), timeout_s)
        except TimeoutError:
            self.server.force_exit = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._serving, 1.0)
