"""Composition root: `build(settings)` wires every part; `dialer serve` runs them until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import structlog
import uvicorn
from prometheus_client import CollectorRegistry

from consumers.requests import RequestConsumer
from service.amqp import BROKER_ERRORS
from service.bland import BlandClient
from service.dispatcher import Dispatcher
from service.errors import ConfigError, StoreUnavailableError
from service.http import Parts, create_app
from service.ledger import Ledger
from service.logs import configure_logging, mask_text
from service.metrics import Metrics
from service.migrate import upgrade
from service.outcomes import OutcomePoller, OutcomeService
from service.reconciler import Reconciler
from service.relay import OutboxRelay
from service.settings import Settings, load_settings

log = structlog.get_logger(__name__)

_T = TypeVar("_T")
RETRYABLE: tuple[type[BaseException], ...] = (StoreUnavailableError, *BROKER_ERRORS)
START_RETRY_MAX_S = 5.0
PING_TIMEOUT_S = 2.0
HTTP_STOP_S = 3.0


def check_serve_settings(settings: Settings) -> None:
    """What `serve` needs beyond valid values; ConfigError names the variable."""
    key = settings.bland_api_key
    if key is None or not key.get_secret_value().strip():
        raise ConfigError("DIALER_BLAND_API_KEY: required (the Bland API key, or _FILE)")
    if settings.webhook_url is not None and settings.webhook_secret is None:
        raise ConfigError(
            "DIALER_WEBHOOK_SECRET: required when DIALER_WEBHOOK_URL is set "
            "(webhooks are verified before they are read)"
        )


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
    """Every part of the service, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, metrics: Metrics, ledger: Ledger) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ledger = ledger
        self.bland = BlandClient(settings, metrics)
        self.outcomes = OutcomeService(settings, ledger, metrics)
        self.dispatcher = Dispatcher(settings, ledger, self.bland, metrics)
        self.poller = OutcomePoller(settings, ledger, self.bland, metrics)
        self.reconciler = Reconciler(settings, ledger, self.bland, metrics)
        self.consumer: RequestConsumer | None = None
        self.relay: OutboxRelay | None = None
        self.http = create_app(Parts(settings, metrics, ledger, self.outcomes, self.readiness))
        self.server: uvicorn.Server | None = None
        self.port: int | None = None
        self.waiting: dict[str, str] = {}  # part -> why it is not started yet
        self._workers_started = False
        self._stopping = False
        self._bring_up: asyncio.Task[None] | None = None
        self._serving: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        """Listen on HTTP at once (probes answer), then bring the rest up in the background."""
        sock = listen_socket(self.settings.http_host, self.settings.http_port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.http,
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

    async def _start_parts(self) -> None:
        if self.settings.migrate_on_start:
            await self._retry("database", lambda: upgrade(self.settings))
        await self._retry("database", self.ledger.ping)
        self.relay = await self._retry("broker", self._start_relay)
        await self.dispatcher.start()
        await self.poller.start()
        await self.reconciler.start()
        self._workers_started = True
        self.consumer = await self._retry("broker", self._start_consumer)
        log.info("service_started", http_port=self.port, prefix=self.settings.prefix)

    async def _retry(self, part: str, start: Callable[[], Awaitable[_T]]) -> _T:
        """Keep trying while the broker or the database is unreachable (readiness says so)."""
        delay_s = 0.2
        while True:
            try:
                result = await start()
            except RETRYABLE as exc:
                reason = mask_text(str(exc)) or type(exc).__name__
                self.waiting[part] = f"unreachable: {reason}"
                log.warning("start_waiting", part=part, error=reason, retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, START_RETRY_MAX_S)
                continue
            self.waiting.pop(part, None)
            return result

    async def _start_relay(self) -> OutboxRelay:
        relay = OutboxRelay(self.settings, self.ledger, self.metrics)
        try:
            await relay.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await relay.stop(0.1)
            raise
        return relay

    async def _start_consumer(self) -> RequestConsumer:
        consumer = RequestConsumer(
            self.settings, self.ledger, self.metrics, stop_call=self.bland.stop_call
        )
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop(0.1)
            raise
        return consumer

    # ------------------------------------------------------------ readiness

    async def readiness(self) -> dict[str, str]:
        """database, broker, consumers: "ok" or what is wrong."""
        checks: dict[str, str] = {}
        if self._stopping:
            checks["shutdown"] = "in progress"
        try:
            await asyncio.wait_for(self.ledger.ping(), PING_TIMEOUT_S)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means: not ready, and say why
            checks["database"] = mask_text(str(exc)) or type(exc).__name__
        checks["broker"] = self._broker_check()
        checks["consumers"] = self._consumer_check()
        return checks

    def _broker_check(self) -> str:
        if "broker" in self.waiting:
            return self.waiting["broker"]
        if (self.consumer is not None and self.consumer.ready) or (
            self.relay is not None and self.relay.ready
        ):
            return "ok"
        return "not connected" if self.relay is not None else "not connected yet"

    def _consumer_check(self) -> str:
        consumer = self.consumer
        if consumer is None:
            return "not started"
        if consumer.ready:
            return "ok"
        return "paused: the database is unavailable" if consumer.paused else "not consuming"

    # ------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Drain within shutdown_grace_s: intake, then dials and rounds, HTTP, then events."""
        loop = asyncio.get_running_loop()
        grace_s = self.settings.shutdown_grace_s
        deadline = loop.time() + grace_s * 0.9

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - loop.time()) * share)

        self._stopping = True
        if self._bring_up is not None and not self._bring_up.done():
            self._bring_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bring_up
        if self.consumer is not None:
            await self.consumer.stop(left(0.3))
        if self._workers_started:
            reserve_s = min(2.0, grace_s * 0.2)
            await asyncio.gather(
                self.dispatcher.stop(max(0.05, left() - reserve_s)),
                self.poller.stop(left(0.5)),
                self.reconciler.stop(left(0.5)),
            )
        # HTTP before the last flush: a webhook taken after it would leave an event unsent
        # until the next start (Bland retries refused webhooks; the poller covers the rest).
        await self._stop_http(left(0.3))
        if self.relay is not None:
            await self._flush_outbox(deadline)
            await self.relay.stop(left())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outcomes.aclose(), left())
        await self.bland.aclose()
        await self.ledger.close()
        log.info("service_stopped")

    async def _flush_outbox(self, deadline: float) -> None:
        """Let the relay publish what was written during the drain, while time remains."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline - 0.2:
            try:
                counts = await asyncio.wait_for(self.ledger.counts(self._now()), PING_TIMEOUT_S)
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

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC)


async def build(settings: Settings, *, registry: CollectorRegistry | None = None) -> App:
    """Every part wired with one settings object; no I/O until App.start()."""
    try:
        ledger = await Ledger.open(settings)
    except StoreUnavailableError as exc:  # the SQLite file's directory cannot be made
        raise ConfigError(f"DIALER_DATA_DIR / DIALER_DATABASE_URL: {exc}") from exc
    except Exception as exc:  # a malformed URL or a missing driver: configuration
        raise ConfigError(f"DIALER_DATABASE_URL: {mask_text(str(exc))}") from exc
    return App(settings, Metrics(registry), ledger)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain; 0 on a clean stop."""
    check_serve_settings(settings)
    app = await build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, app.started}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if app.started.done() and not app.started.cancelled():
            app.started.result()  # a configuration error found while starting
            await stop.wait()
        log.info("shutdown_requested", grace_s=settings.shutdown_grace_s)
    finally:
        await app.stop()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer serve` is configured by DIALER_* variables only."""
    parser.epilog = "Configuration: DIALER_* environment variables (see the README)."


def run(args: argparse.Namespace) -> int:
    """Load settings (exit 2 naming a bad variable), log, serve."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))
