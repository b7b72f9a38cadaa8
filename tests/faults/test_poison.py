"""Poison messages among 1,000 good requests: invalid JSON, wrong types, a 5 MiB body (the
default cap is 4 MiB), JSON nested 1,000 levels deep (a few KiB, under the size cap), and a
lone surrogate (`\\ud800`) in a text field.

Each poison message has its own request id: it is settled by its `call.rejected` event, and
never dialed. Those the service cannot read at all (invalid JSON, oversize) also leave a copy
in `dialer.dead` with the reason in `x-dialer-reason`. The good requests around them are each
dialed once and settled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.checks import (
    assert_dialed_once_or_settled_without_a_call,
    assert_settled_once,
    rng_for,
)
from tests.faults.rig import Rig
from tests.faults.scenarios import Scenario
from tests.support.faultbus import Request, read_queue
from tests.support.service import fictional_numbers
from tests.support.tally import Tally, calls_per_request, compute

pytestmark = [pytest.mark.faults]

GOOD = 1000
NESTING = 1000
DEAD_LETTERED_BY_THE_SERVICE = ("invalid_json", "too_large")


def poison_messages(prefix: str) -> dict[str, Request]:
    """kind -> one poison request (numbers outside the good requests' range)."""
    number = fictional_numbers(1000)[-1]
    # Built as text: json.dumps itself gives up on an object this deep.
    nested = '{"a":' * NESTING + '"deep"' + "}" * NESTING
    bodies: dict[str, bytes] = {
        "invalid_json": b'{"phone_number": "' + number.encode() + b'", "task": "Say hel',
        "wrong_types": json.dumps(
            {"phone_number": [number], "task": 42, "record": "yes", "temperature": "hot"}
        ).encode(),
        "too_large": json.dumps({"phone_number": number, "task": "x" * (5 * 1024 * 1024)}).encode(),
        "deeply_nested": (
            f'{{"phone_number": "{number}", "task": "Say hello.", "request_data": {nested}}}'
        ).encode(),
        "lone_surrogate": json.dumps(
            {"phone_number": number, "task": "Say hello \ud800 now."}
        ).encode(),
    }
    return {
        kind: Request(f"{prefix}-{kind}", body, phone_number=number)
        for kind, body in bodies.items()
    }


@dataclass
class PoisonRun:
    """The tallies (all, good ones) and what became of each poison message."""

    tally: Tally
    good: Tally
    poison: dict[str, Request]
    finals: dict[str, set[str]]
    calls: dict[str, int]
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> headers


async def _poison(rig: Rig) -> PoisonRun:
    rng = rng_for(rig.name)
    await rig.boot("sqlite")
    good = rig.make_requests(GOOD, id_prefix="good")
    poison = poison_messages(rig.prefix)
    batch = list(good)
    for request in poison.values():  # each at a random place among the good ones
        batch.insert(rng.randrange(len(batch) + 1), request)
    await rig.publish(batch)

    poison_ids = {r.request_id for r in poison.values()}

    async def only_poison_left_and_dead_lettered() -> bool:
        lost = set(rig.lost_ids())
        if not lost <= poison_ids:
            return False
        depth = await rig.dead_letter_depth()
        return depth >= len(DEAD_LETTERED_BY_THE_SERVICE) + len(lost)

    settled = await rig.settle(timeout_s=180, give_up=only_poison_left_and_dead_lettered)
    dead = await read_queue(rig.node.url, f"{rig.prefix}.dead")
    dead_letters = {str(m["message_id"]): m["headers"] for m in dead}
    rig.extra_texts["dead-letter headers"] = json.dumps([m["headers"] for m in dead], default=str)
    truths = await rig.sandbox.ground_truths() if rig.sandbox else []
    calls = calls_per_request(truths)
    finals = rig.recorder.finals()
    tally = await rig.tally(
        settled=settled,
        poison={kind: sorted(finals.get(r.request_id, set())) for kind, r in poison.items()},
        dead_letter_reasons={
            kind: (dead_letters.get(r.request_id) or {}).get("x-dialer-reason")
            or (dead_letters.get(r.request_id) or {}).get("x-first-death-reason")
            for kind, r in poison.items()
        },
    )
    good_tally = compute(
        "poison: the good ones", [r.request_id for r in good], calls, finals, seconds=tally.seconds
    )
    return PoisonRun(tally, good_tally, poison, finals, dict(calls), dead_letters)


POISON = Scenario("poison x5 among 1000 good", _poison, weight_s=70)


@pytest.mark.scenario(POISON)
def test_the_good_requests_around_poison_are_each_dialed_once_and_settled(
    outcome: PoisonRun,
) -> None:
    assert_dialed_once_or_settled_without_a_call(outcome.good)


@pytest.mark.parametrize(
    "kind",
    [
        "invalid_json",
        "wrong_types",
        "too_large",
        "deeply_nested",
        "lone_surrogate",
    ],
)
@pytest.mark.scenario(POISON)
def test_each_poison_message_is_rejected_and_never_dialed(outcome: PoisonRun, kind: str) -> None:
    request = outcome.poison[kind]
    assert outcome.calls.get(request.request_id, 0) == 0, "a poison message was dialed"
    assert outcome.finals.get(request.request_id) == {"call.rejected"}, (
        f"{kind}: finals {outcome.finals.get(request.request_id)}, "
        f"dead letter {outcome.dead_letters.get(request.request_id)}"
    )
    if kind in DEAD_LETTERED_BY_THE_SERVICE:
        headers = outcome.dead_letters.get(request.request_id) or {}
        assert headers.get("x-dialer-reason") == kind, headers


@pytest.mark.scenario(POISON)
def test_nothing_is_lost_counting_the_poison_messages(outcome: PoisonRun) -> None:
    assert_settled_once(outcome.tally)
