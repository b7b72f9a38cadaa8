"""`dialer serve`: the service until SIGTERM or SIGINT, then a drain within the grace period."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable

import structlog

from service.app import App
from service.composition import assemble
from service.errors import ConfigError
from service.logs import configure_logging
from service.settings import Settings, load_settings

log = structlog.get_logger(__name__)


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


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain; 0 on a clean stop."""
    check_serve_settings(settings)
    app = App(await assemble(settings))
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
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(serve(settings))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (measured: 5-8 % less CPU per call); else asyncio's own."""
    try:
        import uvloop  # noqa: PLC0415 - optional: the service runs without it
    except ImportError:
        return None
    return uvloop.new_event_loop
