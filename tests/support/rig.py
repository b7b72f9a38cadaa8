"""The dialing parts wired on a fresh ledger and one sandbox, for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from schemas.envelope import DialerOptions
from service.bland import BlandClient
from service.dispatcher import Dispatcher
from service.ledger import Ledger, NewCall
from service.metrics import Metrics
from service.migrate import upgrade
from service.outcomes import OutcomePoller
from service.reconciler import Reconciler
from service.settings import Settings
from tests.support.sandbox import SandboxProcess


@dataclass
class Rig:
    """Dispatcher, reconciler and poller on one ledger and one sandbox."""

    ledger: Ledger
    metrics: Metrics
    bland: BlandClient
    dispatcher: Dispatcher
    reconciler: Reconciler
    poller: OutcomePoller
    settings: Settings


@asynccontextmanager
async def rig(
    db_url: str,
    sandbox: SandboxProcess,
    *,
    poller_clock: Callable[[], datetime] | None = None,
    **overrides: Any,
) -> AsyncIterator[Rig]:
    """Migrate a fresh ledger and wire the parts; closed afterwards."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "bland_base_url": sandbox.base_url,
        "bland_api_key": sandbox.api_key,
        "max_calls_per_second": 100.0,
        "reconcile_grace_s": 300.0,
        **overrides,
    }
    settings = Settings(**values)
    await upgrade(settings)
    ledger = await Ledger.open(settings)
    metrics = Metrics(CollectorRegistry())
    bland = BlandClient(settings, metrics)
    parts = (settings, ledger, bland, metrics)
    poller = OutcomePoller(*parts, clock=poller_clock or (lambda: datetime.now(UTC)))
    try:
        yield Rig(ledger, metrics, bland, Dispatcher(*parts), Reconciler(*parts), poller, settings)
    finally:
        await bland.aclose()
        await ledger.close()


def new_call(request_id: str, phone: str, *, correlation_id: str | None = None) -> NewCall:
    """A due request to `phone`."""
    return NewCall(
        request_id=request_id,
        correlation_id=correlation_id,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Say hello."},
        options=DialerOptions(),
        publisher_webhook=None,
    )
