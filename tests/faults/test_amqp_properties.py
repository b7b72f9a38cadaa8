"""Malformed AMQP properties among valid requests: a `correlation_id` that is not valid UTF-8,
and a `timestamp` in microseconds (year 55,000-something as seconds).

aio-pika cannot even publish these, so they go out through RawPublisher (tests/support/
rawamqp.py), which builds the content header frame byte by byte. Order on the queue: 100 valid,
the bad correlation_id, 100 valid, the bad timestamp, 100 valid; each part confirmed before the
next, so every malformed message has a full prefetch window of valid requests behind it.

What must hold: every valid request is dialed once and settled; each malformed one leaves a
trace (a final event, or at least a dead letter); nobody is dialed twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.faultbus import Request, read_queue
from tests.support.rawamqp import RawPublisher
from tests.support.tally import Tally, calls_per_request, compute

pytestmark = [pytest.mark.faults]

VALID_PER_PART = 100


@dataclass
class PropertiesRun:
    """Tallies of the valid requests, and where every request ended."""

    tally: Tally
    valid: Tally
    malformed: dict[str, str]  # kind -> request id
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0


async def _malformed(rig: Rig) -> PropertiesRun:
    (service,) = await rig.boot("sqlite")
    parts = [
        rig.make_requests(VALID_PER_PART, id_prefix=f"v{i}", offset=i * VALID_PER_PART)
        for i in range(3)
    ]
    number = parts[0][0].phone_number or ""
    body = json.dumps({"phone_number": number, "task": "Say hello and end the call."}).encode()
    malformed: dict[str, tuple[str, dict[str, Any]]] = {
        "correlation_id_not_utf8": (
            f"{rig.prefix}-bad-corr",
            {"correlation_id": b"\xff\xfe\xfa-not-utf8"},
        ),
        "timestamp_in_microseconds": (
            f"{rig.prefix}-bad-ts",
            {"timestamp": int(time.time() * 1_000_000)},
        ),
    }
    exchange = f"{rig.prefix}.requests"
    async with RawPublisher(rig.node.url) as raw:
        for part, (request_id, properties) in zip(parts, malformed.values(), strict=False):
            await rig.publish(part)
            await raw.publish(
                exchange,
                "call.create",
                body,
                message_id=request_id,
                content_type="application/json",
                delivery_mode=2,
                **properties,
            )
            rig.expect([Request(request_id, body, phone_number=number)])
        await rig.publish(parts[2])

    async def the_rest_is_dead_lettered() -> bool:
        return await rig.dead_letter_depth() >= len(rig.lost_ids())

    settled = await rig.settle(timeout_s=180, give_up=the_rest_is_dead_lettered)
    dead = await read_queue(rig.node.url, f"{rig.prefix}.dead")
    dead_letters = {
        (
            m["message_id"].decode(errors="replace")
            if isinstance(m["message_id"], bytes)
            else str(m["message_id"])
        ): m["headers"]
        for m in dead
    }
    rig.extra_texts["dead-letter headers"] = json.dumps([m["headers"] for m in dead], default=str)
    valid_ids = [r.request_id for part in parts for r in part]
    calls = calls_per_request(await rig.sandbox.ground_truths()) if rig.sandbox else None
    finals = rig.recorder.finals()
    reconnects = sum(
        1
        for line in service.log_lines()
        if "reader exited abnormally" in str(line.get("event", ""))
    )
    valid_dead = [rid for rid in valid_ids if rid in dead_letters]
    tally = await rig.tally(
        settled=settled,
        valid_dead_lettered=len(valid_dead),
        dead_letter_reasons=sorted(
            {
                str(h.get("x-first-death-reason") or h.get("x-dialer-reason"))
                for h in dead_letters.values()
            }
        ),
        consumer_connection_crashes=reconnects,
    )
    valid = compute(
        "malformed properties: the valid ones",
        valid_ids,
        calls or {},
        finals,
        seconds=tally.seconds,
    )
    return PropertiesRun(
        tally=tally,
        valid=valid,
        malformed={kind: rid for kind, (rid, _) in malformed.items()},
        dead_letters=dead_letters,
        calls=dict(calls or {}),
        reconnects=reconnects,
    )


PROPERTIES = Scenario("malformed AMQP properties x2 among 300", _malformed)


@pytest.mark.scenario(PROPERTIES)
def test_valid_requests_beside_malformed_properties_are_each_dialed_once_and_settled(
    outcome: PropertiesRun,
) -> None:
    dead_valid = outcome.tally.notes["valid_dead_lettered"]
    assert dead_valid == 0, f"{dead_valid} valid requests dead-lettered: {outcome.valid.summary()}"
    assert outcome.valid.duplicates == 0
    assert outcome.valid.lost == 0, outcome.valid.summary()


@pytest.mark.scenario(PROPERTIES)
def test_nobody_is_dialed_twice(outcome: PropertiesRun) -> None:
    assert outcome.tally.duplicates == 0, outcome.tally.summary()


@pytest.mark.scenario(PROPERTIES)
def test_each_malformed_request_is_settled_or_leaves_a_dead_letter(outcome: PropertiesRun) -> None:
    # Either is a trace: a call.rejected (or, for a harmless property, a settled call) or a
    # copy in the dead-letter queue. Today they are dead-lettered by the delivery limit.
    lost = set(outcome.tally.lost_ids)
    for kind, request_id in outcome.malformed.items():
        assert request_id not in lost or request_id in outcome.dead_letters, (
            f"{kind}: neither a final event nor a dead letter"
        )
