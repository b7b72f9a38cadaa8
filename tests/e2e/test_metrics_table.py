"""The README's metric table is what `/metrics` serves after an end-to-end run."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.commands.readme import README
from service.settings import Settings
from tests.support.bus import Tap
from tests.support.sandbox import SandboxProcess
from tests.support.service import StartService, call_requests, publish_many, settled

pytestmark = [pytest.mark.integration]

ROW = re.compile(r"^\| `(dialer_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|")


def readme_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names), from the README's generated metrics table."""
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- metrics:start -->")[1].split("<!-- metrics:end -->")[0]
    rows = {}
    for line in table.splitlines():
        if match := ROW.match(line):
            labels = frozenset(re.findall(r"`([a-z_]+)`", match.group(3)))
            rows[match.group(1)] = (match.group(2), labels)
    return rows


def served_metrics(exposition: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) of every dialer_ family with at least one series."""
    served = {}
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("dialer_") or not family.samples:
            continue
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(
            key for sample in family.samples for key in sample.labels if key not in ("le",)
        )
        served[name] = (family.type, labels)
    return served


async def test_the_readme_metric_table_equals_the_metrics_served(
    sqlite_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    service = await asyncio.to_thread(start, sqlite_url, fast_sandbox)
    requests = call_requests(5)
    await publish_many(bus_settings, requests)
    ids = {request_id for request_id, _ in requests}
    await tap.wait_for(lambda seen: settled(seen, ids), timeout_s=60)

    served = served_metrics(await asyncio.to_thread(service.metrics))
    documented = readme_metrics()
    assert len(documented) >= 11  # DESIGN section 7's set, at least
    assert served == documented
