"""No phone number (in any spelling) and no secret (the Bland API key, the webhook secret, the
AMQP password) in the service's logs, the dead-letter queue's headers, or /metrics.

A scenario of its own drives the paths that tend to print what they hold: rejections whose
messages name a field's value, unreadable and oversize bodies and a wrong content type (dead
letters with `x-dialer-error`), a cancel naming a number, unsigned and unknown webhooks full of
numbers, a broker link reset and a database outage (connection errors with URLs). The logs of
every other scenario are scanned at their own end; the second test checks all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.launcher import poll
from tests.faults.rig import Rig
from tests.faults.scenarios import Runner, Scenario
from tests.faults.test_webhooks import post_webhook, sign
from tests.support.faultbus import Request, read_queue
from tests.support.leaks import Leak
from tests.support.service import fictional_numbers
from tests.support.tally import Tally

pytestmark = [pytest.mark.faults]


@dataclass
class LeakRun:
    """The tally and every leak found."""

    tally: Tally
    leaks: list[Leak] = field(default_factory=list)
    dead_letters: int = 0
    rejected: int = 0


def _bad_requests(rig: Rig) -> list[Request]:
    numbers = fictional_numbers(1000)[900:920]
    n = iter(numbers)

    def request(kind: str, body: bytes, **properties: Any) -> Request:
        return Request(f"{rig.prefix}-{kind}", body, properties=properties, phone_number=next(n))

    digits = [x.lstrip("+1") for x in numbers]
    return [
        request(
            "invalid-fields",
            json.dumps(
                {
                    "phone_number": f"+1 ({digits[0][:3]}) {digits[0][3:6]}-{digits[0][6:]} ext 9",
                    "transfer_phone_number": f"{digits[1][:3]}.{digits[1][3:6]}.{digits[1][6:]}x",
                    "from": f"1-{digits[2][:3]}-{digits[2][3:6]}-{digits[2][6:]}-0",
                    "task": 5,
                }
            ).encode(),
        ),
        request("invalid-json", f'{{"phone_number": "{numbers[3]}", "task": '.encode()),
        request(
            "wrong-content-type",
            json.dumps({"phone_number": numbers[4], "task": "hi"}).encode(),
            content_type="text/plain",
        ),
        request(
            "too-large", json.dumps({"phone_number": numbers[5], "task": "y" * 70_000}).encode()
        ),
        request(
            "not-an-object",
            json.dumps([numbers[6], f"{digits[7][:3]}-{digits[7][3:6]}-{digits[7][6:]}"]).encode(),
        ),
        request(
            "bad-number", json.dumps({"phone_number": f"+1{digits[8]}99", "task": "hi"}).encode()
        ),
    ]


def _warnings(rig: Rig) -> int:
    return sum(
        1
        for s in rig.services
        for line in s.log_lines()
        if line.get("level") in ("warning", "error")
    )


async def _leak_hunt(rig: Rig) -> LeakRun:
    (service,) = await rig.boot("postgres")
    good = rig.make_requests(50, id_prefix="ok", offset=850)
    await rig.publish(good)
    bad = _bad_requests(rig)
    await rig.publish(bad)
    numbers = fictional_numbers(1000)
    cancel = Request(
        f"{rig.prefix}-cancel",
        json.dumps({"request_id": numbers[920]}).encode(),
        routing_key="call.cancel",
    )
    await rig.publish([cancel])
    # Webhooks full of numbers: unsigned, and signed for a call nobody knows.
    payload = json.dumps(
        {"call_id": "00000000-0000-0000-0000-000000000000", "completed": True, "status": "completed",
         "to": numbers[921], "from": numbers[922], "variables": {"phone_number": numbers[923]},
         "concatenated_transcript": f"call me at {numbers[924]}", "metadata": {"dialer_request_id": numbers[925]}}
    ).encode()  # fmt: skip
    await post_webhook(service, payload, None)
    await post_webhook(service, payload, sign(rig.webhook_secret, payload))
    # Connection errors: the broker link reset, the database cut, both healed.
    warnings_before = _warnings(rig)
    rig.broker_link.cut()
    assert rig.pg_link is not None
    rig.pg_link.cut()

    async def noticed() -> bool:
        return (await service.readyz())[0] == 503

    await poll(noticed, timeout_s=30, what="readiness to report the outage")
    await poll(
        lambda: _warnings(rig) >= warnings_before + 3,
        timeout_s=30,
        what="the failed reconnections to be logged",
        interval_s=0.2,
    )
    rig.broker_link.restore()
    rig.pg_link.restore()
    await service.wait_ready(timeout_s=60)
    settled = await rig.settle(timeout_s=90)
    dead = await read_queue(rig.node.url, f"{rig.prefix}.dead")
    rig.extra_texts["dead-letter headers"] = json.dumps([m["headers"] for m in dead], default=str)
    leaks = await rig.leaks()
    rejected = len(rig.recorder.of("call.rejected"))
    tally = await rig.tally(settled=settled, dead_letters=len(dead), rejected=rejected)
    return LeakRun(tally, leaks, len(dead), rejected)


LEAKS = Scenario("secrets and numbers in logs/DLQ/metrics", _leak_hunt)


@pytest.mark.scenario(LEAKS)
def test_no_number_or_secret_in_logs_dead_letter_headers_or_metrics(outcome: LeakRun) -> None:
    assert outcome.dead_letters >= 3, "the dead-letter paths were not exercised"
    assert outcome.rejected >= 5, "the rejection paths were not exercised"
    assert not outcome.leaks, "\n".join(str(leak) for leak in outcome.leaks)


@pytest.mark.timeout(1800)
@pytest.mark.scenario(LEAKS)
def test_no_scenario_leaked_a_number_or_a_secret(outcome: LeakRun, scenarios: Runner) -> None:
    """Every scenario scanned its own logs, metrics and dead letters at its end."""
    scenarios.wait_all()
    tallies = scenarios.collector.tallies
    assert tallies, "no scenario ran"
    leaks = {t.scenario: t.notes.get("leaks") for t in tallies if t.notes.get("leaks")}
    assert not leaks, json.dumps(leaks, indent=1)
