"""Operator commands against a running service: a fixed dead letter becomes a call; status."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from service.commands.cli import main
from service.commands.dead_letters import list_dead
from service.commands.status import status
from service.settings import Settings
from tests.support.bus import Seen, Tap, publish_raw, queue_depth
from tests.support.sandbox import SandboxProcess
from tests.support.service import StartService

pytestmark = [pytest.mark.integration]

FIXED = {"phone_number": "+14155550123", "task": "Confirm the appointment.", "max_duration": 2}


async def _wait_depth(settings: Settings, name: str, depth: int, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await queue_depth(settings, name) == depth:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never held {depth} message(s)")


async def test_a_dead_letter_fixed_and_replayed_becomes_a_call(  # noqa: PLR0917 - fixtures
    sqlite_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await asyncio.to_thread(start, sqlite_url, fast_sandbox)
    monkeypatch.setenv("DIALER_AMQP_URL", bus_settings.amqp_url.get_secret_value())
    monkeypatch.setenv("DIALER_PREFIX", bus_settings.prefix)
    broken = b'{"phone_number": "+14155550123", "task": "Confirm the appointment.",'
    await publish_raw(bus_settings, broken, message_id="dl-fix-1")
    await _wait_depth(bus_settings, f"{bus_settings.prefix}.dead", 1)
    await tap.wait_for(lambda seen: any(s.routing_key == "call.rejected" for s in seen))

    listed = io.StringIO()
    assert await list_dead(bus_settings, 10, listed, as_json=True) == 1
    (item,) = [json.loads(line) for line in listed.getvalue().splitlines()]
    assert (item["message_id"], item["reason"]) == ("dl-fix-1", "invalid_json")

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(FIXED))
    argv = ["dead-letters", "replay", "--id", "dl-fix-1", "--body", str(fixed)]
    assert await asyncio.to_thread(main, argv) == 0
    assert "replayed id=dl-fix-1.fix1 routing_key=call.create" in capsys.readouterr().out
    await _wait_depth(bus_settings, f"{bus_settings.prefix}.dead", 0)

    def settled(seen: list[Seen]) -> bool:
        return any(
            s.routing_key in ("call.completed", "call.failed")
            and s.body["request_id"] == "dl-fix-1.fix1"
            for s in seen
        )

    await tap.wait_for(settled, timeout_s=60)
    calls = [
        c
        for c in await fast_sandbox.aground_truth()
        if c["metadata"]["dialer_request_id"] == "dl-fix-1.fix1"
    ]
    assert len(calls) == 1
    assert calls[0]["phone_number"] == FIXED["phone_number"]

    out = io.StringIO()
    settings = Settings(
        amqp_url=bus_settings.amqp_url, prefix=bus_settings.prefix, database_url=sqlite_url
    )
    view = await status(settings, out, as_json=False)
    report = out.getvalue()
    assert view.by_state["rejected"] == 1  # the broken original stays recorded as rejected
    assert view.by_state["completed"] + view.by_state["failed"] == 1
    assert "dl-fix-1 rejected invalid_json" in report
    assert "backlog       pending 0 (0 due now)  dialing 0  queued 0  unknown 0" in report
    assert f"{bus_settings.prefix}.dead: 0 message(s)" in report
    assert f"{bus_settings.prefix}.requests: 0 message(s), 1 consumer(s)" in report
