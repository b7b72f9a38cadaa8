"""Invalid requests through the running service: nobody is dialed, each leaves a reason."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from service.settings import Settings
from tests.support.bus import Tap, drain
from tests.support.sandbox import SandboxProcess
from tests.support.service import (
    StartService,
    call_request,
    calls_by_request,
    fictional_numbers,
    latest_by_request,
    publish_many,
    settled,
)

pytestmark = [pytest.mark.integration]

NUMBER = fictional_numbers(1)[0]
INVALID: dict[str, bytes] = {
    "not_json": b'{"phone_number": "+12125550100", task: hi',
    "not_utf8": b'{"phone_number": "+12125550100", "task": "caf\xe9"}',
    "wrong_type": json.dumps({"phone_number": NUMBER, "task": 42}).encode(),
    "missing_phone": json.dumps({"task": "Say hello."}).encode(),
    "bad_phone": json.dumps(call_request("12345")).encode(),
    "unknown_field": json.dumps(call_request(NUMBER, favourite_colour="blue")).encode(),
    "five_mib": json.dumps(call_request(NUMBER, task="x" * (5 * 1024 * 1024))).encode(),
}


async def test_invalid_requests_dial_nobody_and_each_leaves_a_reason(
    sqlite_url: str,
    fast_sandbox: SandboxProcess,
    tap: Tap,
    bus_settings: Settings,
    start: StartService,
) -> None:
    service = await asyncio.to_thread(start, sqlite_url, fast_sandbox)
    ids = {name: f"bad-{name}-{uuid.uuid4().hex[:8]}" for name in INVALID}

    await publish_many(bus_settings, [(ids[name], body) for name, body in INVALID.items()])
    await tap.wait_for(lambda seen: len(seen) >= len(INVALID), timeout_s=20)
    valid_id = f"ok-{uuid.uuid4().hex}"
    await publish_many(bus_settings, [(valid_id, json.dumps(call_request(NUMBER)).encode())])
    await tap.wait_for(lambda seen: settled(seen, [valid_id]), timeout_s=30)

    # The consumer kept going: the valid request after them was dialed, and only it.
    assert calls_by_request(await fast_sandbox.aground_truth()) == {valid_id: 1}
    rejected = latest_by_request(tap.seen, ["call.rejected"])
    dead = {
        str(m.headers.get("x-dialer-request-id")): str(m.headers.get("x-dialer-reason"))
        for m in await drain(bus_settings, f"{bus_settings.prefix}.dead")
    }
    for name, request_id in ids.items():
        reason = rejected.get(request_id, {}).get("reason") or dead.get(request_id)
        assert reason, f"{name}: neither call.rejected nor a dead letter"
        if request_id in rejected:
            assert rejected[request_id]["errors"], name
    assert rejected[ids["not_json"]]["reason"] == "invalid_json"
    assert rejected[ids["not_utf8"]]["reason"] == "invalid_encoding"
    assert rejected[ids["five_mib"]]["reason"] == "too_large"
    assert rejected[ids["bad_phone"]]["reason"] == "invalid_request"
    assert any(
        "unknown" in e or "favourite_colour" in e for e in rejected[ids["unknown_field"]]["errors"]
    )
    assert dead[ids["not_json"]] == "invalid_json"
    assert service.readyz()[0] == 200
