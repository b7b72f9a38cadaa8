"""The fault suite's fixtures: a private RabbitMQ node, the scenario runner, the tally table.

Run it with `.venv/bin/python -m pytest tests/faults -m faults`. At the end of the session the
tally of every scenario is printed and written as JSON to $DIALER_FAULTS_TALLY, else to
`faults-tally.json` in pytest's base temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.faults.rig import Collector
from tests.faults.scenarios import Runner, Scenario, workers
from tests.support.rabbitnode import RabbitNode, RabbitNodeError
from tests.support.tally import render_table

MARKERS = (
    "faults: the fault suite (tests/faults): a private RabbitMQ node, kill -9, partitions, poison",
    "scenario(s): the fault scenario whose outcome the test reads (tests/faults/scenarios.py)",
)
_COLLECTOR = pytest.StashKey[Collector]()
SCENARIO_TIMEOUT_S = 1800
REQUIRED_FLAGS = ("quorum_queue", "stream_queue")  # stream_queue: at-least-once dead-lettering


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    config.stash[_COLLECTOR] = Collector()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test waits for its scenario, which may be queued behind others: the per-test timeout
    # of pyproject (300 s) would cut it; every wait inside a scenario has its own deadline.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SCENARIO_TIMEOUT_S))


def _report_path(config: pytest.Config) -> Path:
    explicit = os.environ.get("DIALER_FAULTS_TALLY")
    if explicit:
        return Path(explicit)
    factory = getattr(config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else Path.cwd()
    return Path(base) / "faults-tally.json"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    collector = config.stash.get(_COLLECTOR, None)
    if collector is None or not collector.tallies:
        return
    rows = [t.row() for t in collector.tallies]
    terminalreporter.section("fault suite tally")
    terminalreporter.write_line(render_table(rows))
    path = _report_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([t.as_json() for t in collector.tallies], indent=2, default=str))
        terminalreporter.write_line(f"tally written to {path}")
    except OSError as exc:
        terminalreporter.write_line(f"tally not written to {path}: {exc}")


# ---------------------------------------------------------------- the private broker


async def _check_dead_lettering(url: str) -> None:
    """A quorum queue with the service's arguments dead-letters a rejected message (at least once)."""
    suffix = uuid.uuid4().hex[:8]
    dead, source = f"check-dead-{suffix}", f"check-src-{suffix}"
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dlx = await channel.declare_exchange(dead, aio_pika.ExchangeType.TOPIC, durable=True)
        dlq = await channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, "#")
        queue = await channel.declare_queue(
            source,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 2,
                "x-dead-letter-exchange": dead,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await channel.default_exchange.publish(aio_pika.Message(b"check"), routing_key=source)
        message = await queue.get(timeout=10)
        await message.reject(requeue=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        got = None
        while got is None and loop.time() < deadline:
            got = await dlq.get(no_ack=True, fail=False)
            if got is None:
                await asyncio.sleep(0.05)
        for name in (source, dead):
            await channel.queue_delete(name, if_unused=False, if_empty=False)
        await channel.exchange_delete(dead)
    if got is None or got.body != b"check":
        raise RabbitNodeError("the private node did not dead-letter a rejected message")


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """The suite's own RabbitMQ node (never the shared broker); deleted at the end."""
    try:
        node = RabbitNode.start(tmp_path_factory.mktemp("rabbit") / "node")
    except RabbitNodeError as exc:
        pytest.fail(f"the fault suite cannot start its private RabbitMQ node: {exc}")
    try:
        flags = node.feature_flags()
        missing = [f for f in REQUIRED_FLAGS if flags.get(f) != "enabled"]
        if missing:
            pytest.fail(f"private node {node.name}: feature flags not enabled: {missing} ({flags})")
        asyncio.run(_check_dead_lettering(node.url))
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def collector(pytestconfig: pytest.Config) -> Collector:
    """Where scenarios leave their tallies."""
    return pytestconfig.stash[_COLLECTOR]


@pytest.fixture(scope="session")
def scenarios(
    request: pytest.FixtureRequest,
    rabbit: RabbitNode,
    collector: Collector,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runner]:
    """Runs every scenario the selected tests name, a few at a time, in test order."""

    def make_dir(name: str) -> Path:
        return tmp_path_factory.mktemp(re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:40])

    runner = Runner(rabbit, collector, make_dir, workers())
    wanted: list[Scenario] = []
    for item in request.session.items:
        marker = item.get_closest_marker("scenario")
        if marker is not None and marker.args[0] not in wanted:
            wanted.append(marker.args[0])
    runner.submit_all(wanted)
    yield runner
    runner.close()


@pytest.fixture
def outcome(request: pytest.FixtureRequest, scenarios: Runner) -> Any:
    """The outcome of the scenario this test names with @pytest.mark.scenario(S)."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None or not isinstance(marker.args[0], Scenario):
        raise pytest.UsageError("a test using `outcome` needs @pytest.mark.scenario(SCENARIO)")
    return scenarios.result(marker.args[0])
