"""The composition root: every part of the service built from one settings object.

Nothing here does I/O; `App.start()` connects. Tests build the service through `assemble`
with their own settings, clock, HTTP transports and metrics registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from consumers.requests import RequestConsumer
from service.bland.client import BlandClient
from service.bus.outbox_relay import OutboxRelay
from service.clock import Clock, utcnow
from service.dialing.dispatcher import Dispatcher
from service.errors import ConfigError, StoreUnavailableError
from service.health import Health
from service.http import HttpParts, create_app
from service.ledger import Ledger
from service.ledger.retention import Retention
from service.logs import mask_text
from service.metrics import Metrics
from service.outcomes.batches import BatchRounds
from service.outcomes.poller import OutcomePoller
from service.outcomes.reconciler import Reconciler
from service.outcomes.stops import CallStops
from service.outcomes.webhooks import WebhookIntake
from service.settings import Settings


@dataclass(frozen=True)
class Parts:
    """Every part of one service process, wired; nothing started."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    ledger: Ledger
    bland: BlandClient
    stops: CallStops
    dispatcher: Dispatcher
    poller: OutcomePoller
    reconciler: Reconciler
    retention: Retention
    batches: BatchRounds
    webhooks: WebhookIntake
    relay: OutboxRelay
    consumer: RequestConsumer
    health: Health
    http: Starlette


async def open_ledger(settings: Settings) -> Ledger:
    """The ledger's engine and pool; a bad URL or data directory is a configuration error."""
    try:
        return await Ledger.open(settings)
    except StoreUnavailableError as exc:  # the SQLite file's directory cannot be made
        raise ConfigError(f"DIALER_DATA_DIR / DIALER_DATABASE_URL: {exc}") from exc
    except Exception as exc:  # a malformed URL or a missing driver: configuration
        raise ConfigError(f"DIALER_DATABASE_URL: {mask_text(str(exc))}") from exc


async def assemble(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    registry: CollectorRegistry | None = None,
    bland_transport: httpx.AsyncBaseTransport | None = None,
    forward_transport: httpx.AsyncBaseTransport | None = None,
) -> Parts:
    """Wire every part: the clock, Bland's HTTP transport and the registry are injectable."""
    ledger = await open_ledger(settings)
    metrics = Metrics(registry)
    bland = BlandClient(settings, metrics, transport=bland_transport)
    stops = CallStops(ledger, bland, metrics, clock=clock)
    relay = OutboxRelay(settings, ledger, metrics, clock=clock)
    dispatcher = Dispatcher(
        settings,
        ledger,
        bland,
        metrics,
        clock=clock,
        stop_canceled=stops.stop,
        on_events=relay.wake,
    )
    webhooks = WebhookIntake(
        settings,
        ledger,
        metrics,
        clock=clock,
        forward_transport=forward_transport,
        record=dispatcher.settle,
    )
    batches = BatchRounds(settings, ledger, bland, metrics, clock=clock)
    consumer = RequestConsumer(
        settings,
        ledger,
        metrics,
        accept=dispatcher.accept,
        stop_canceled=stops.stop,
        wake=dispatcher.wake,
        stop_batches=batches.stop_bland,
        clock=clock,
    )
    health = Health(ledger, consumer, relay)
    return Parts(
        settings=settings,
        clock=clock,
        metrics=metrics,
        ledger=ledger,
        bland=bland,
        stops=stops,
        dispatcher=dispatcher,
        poller=OutcomePoller(
            settings, ledger, bland, metrics, clock=clock, record=dispatcher.settle
        ),
        reconciler=Reconciler(
            settings, ledger, bland, metrics, stops=stops, clock=clock, record=dispatcher.settle
        ),
        retention=Retention(settings, ledger, metrics, clock=clock),
        batches=batches,
        webhooks=webhooks,
        relay=relay,
        consumer=consumer,
        health=health,
        http=create_app(HttpParts(settings, metrics, ledger, webhooks, health.checks)),
    )
