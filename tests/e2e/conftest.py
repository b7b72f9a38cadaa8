"""End-to-end fixtures: the sandbox on a fast clock, a tap on the events, services as processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import Tap
from tests.support.sandbox import SandboxFactory, SandboxProcess
from tests.support.service import (
    FAST_SANDBOX,
    ServiceProcess,
    StartService,
    service_env,
    start_service,
)


@pytest.fixture
def fast_sandbox(sandbox_factory: SandboxFactory) -> SandboxProcess:
    """A sandbox with no plan caps and a fast clock."""
    return sandbox_factory(**FAST_SANDBOX)


@pytest.fixture
def bus_settings(broker: Broker) -> Settings:
    """Settings that reach this test's broker objects (for taps and publishing)."""
    return Settings(amqp_url=broker.url, prefix=broker.prefix)


@pytest.fixture
async def tap(bus_settings: Settings) -> AsyncIterator[Tap]:
    """Every event the services publish."""
    events = await Tap.open(bus_settings, f"{bus_settings.prefix}.events")
    yield events
    await events.close()


@pytest.fixture
def start(broker: Broker, tmp_path: Path) -> Iterator[StartService]:
    """Start `dialer serve` processes (ready) against this test's broker; stopped afterwards."""
    started: list[ServiceProcess] = []

    def run(
        database_url: str,
        sandbox: SandboxProcess,
        *,
        wait: bool = True,
        port: int | None = None,
        **env: str,
    ) -> ServiceProcess:
        environment = service_env(
            amqp_url=broker.url,
            prefix=broker.prefix,
            database_url=database_url,
            sandbox=sandbox,
            port=port,
            **env,
        )
        service = start_service(environment, tmp_path, wait=wait)
        started.append(service)
        return service

    yield run
    for service in started:
        service.stop()
