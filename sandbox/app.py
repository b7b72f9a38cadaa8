"""The sandbox's Starlette application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from sandbox import admin, api, batches, legacy
from sandbox.config import SandboxConfig
from sandbox.simulator import Simulator


def build_app(config: SandboxConfig) -> Starlette:
    """An app whose simulator lives for the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(verify=config.webhook_verify_tls) as client:
            simulator = Simulator(config, client)
            app.state.simulator = simulator
            try:
                yield
            finally:
                await simulator.reset()

    return Starlette(
        routes=[*api.ROUTES, *batches.ROUTES, *legacy.ROUTES, *admin.ROUTES], lifespan=lifespan
    )
