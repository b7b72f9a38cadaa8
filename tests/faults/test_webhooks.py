"""Webhooks that are forged, replayed, early, deeply nested or simply garbage.

- forged: a post-call payload for a live call, without a valid X-Webhook-Signature (none, the
  wrong secret, another body's signature, truncated): 401, and the call's outcome is still the
  one Bland reports;
- replayed: a genuine signed payload posted again (twice), and a signed one contradicting the
  recorded outcome: 200 `replay`, no second final event;
- early: Bland's webhook arrives before the service committed the call id. Either long before
  (the BlandLink holds the answer to POST /v1/calls for 1.5 s while the call, on a 600x clock, is
  long over), or just as the dispatcher commits it (calls as they come, PostgreSQL over a link
  slowed by 10 ms per chunk). Either way the webhook must be kept (DESIGN §6), not answered
  `unknown_call` and left to polling;
- deeply nested: a signed body nested 1,000 levels: 400 (it is not a post-call payload), never
  500;
- fuzzed: 300 seeded random bodies, signed or not: never a 5xx, 401 exactly when unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.faults.checks import assert_settled_once, quantiles, rng_for
from tests.faults.launcher import Service, poll
from tests.faults.rig import Rig, metric_values
from tests.faults.scenarios import Scenario
from tests.support.tally import FINAL_EVENTS, Tally

pytestmark = [pytest.mark.faults]

REQUESTS = 100
FORGED = 20
REPLAYED = 20
FUZZED = 300
NESTING = 1000
HELD_S = 1.5  # answers to POST /v1/calls held this long: under the service's 2 s read timeout


def sign(secret: str, body: bytes) -> str:
    """Bland's scheme: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_webhook(
    service: Service, body: bytes, signature: str | None, client: httpx.AsyncClient | None = None
) -> tuple[int, str]:
    """POST /webhooks/bland; (status, response text)."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Webhook-Signature"] = signature
    if client is None:
        async with httpx.AsyncClient(timeout=10) as own:
            return await post_webhook(service, body, signature, own)
    response = await client.post(
        service.base_url + "/webhooks/bland", content=body, headers=headers
    )
    return response.status_code, response.text[:200]


def forgeries(secret: str, body: bytes) -> list[str | None]:
    """Signatures that must all be refused."""
    good = sign(secret, body)
    return [
        None,
        sign("not-the-secret", body),
        sign(secret, body + b" "),
        good[:32],
        "sha256=" + sign(secret, body[:-1]),
    ]


def fuzz_body(rng: random.Random, call_ids: list[str]) -> bytes:
    """One random body: bytes, broken JSON, or JSON of the wrong shape."""
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
    if kind == 1:
        text = json.dumps(
            {"call_id": rng.choice(call_ids), "completed": True, "status": "completed"}
        )
        return text[: rng.randrange(len(text))].encode()
    values: list[Any] = [
        None, True, 0, -1, 10**30, 1e308, -0.0, "", "x" * 300, [], {}, [1, "a", None],
        {"dialer_request_id": 5}, "\u00e9\u4e2d", rng.choice(call_ids), str(uuid.uuid4()),
    ]  # fmt: skip
    if kind == 2:  # a post-call shape with wrong types
        payload: Any = {
            "call_id": rng.choice(values),
            "completed": rng.choice(values),
            "status": rng.choice(values),
            "queue_status": rng.choice(values),
            "metadata": rng.choice(values),
            "call_length": rng.choice(values),
            "corrected_duration": rng.choice(values),
        }
    elif kind == 3:  # an unknown call, well formed
        payload = {
            "call_id": str(uuid.uuid4()),
            "completed": True,
            "status": "completed",
            "metadata": {"dialer_request_id": f"nobody-{uuid.uuid4().hex[:8]}"},
        }
    elif kind == 4:  # a live event, or an arbitrary JSON value
        payload = rng.choice(
            [{"category": "queue", "log_level": "info", "message": "x"}, [1, 2], "text", 12, None]
        )
    else:  # random keys
        payload = {f"k{rng.randrange(100)}": rng.choice(values) for _ in range(rng.randrange(8))}
    return json.dumps(payload).encode()


def nested_body(levels: int) -> bytes:
    """A JSON object nested `levels` deep (a few KiB)."""
    return ('{"call_id":' * levels + '"x"' + "}" * levels).encode()


@dataclass
class WebhookRun:
    """The tally and every HTTP answer the service gave to our webhooks."""

    tally: Tally
    answers: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    final_events_per_request: Counter[str] = field(default_factory=Counter)
    forged_ids: list[str] = field(default_factory=list)
    outcome_matches_bland: dict[str, bool] = field(default_factory=dict)
    webhooks_metric: dict[str, float] = field(default_factory=dict)
    ready_after: int = 0


async def _hostile(rig: Rig) -> WebhookRun:
    rng = rng_for(rig.name)
    # A slower clock: calls stay live for one to three seconds, to forge webhooks for them.
    (service,) = await rig.boot("sqlite", sandbox={"clock_speed": 20.0})
    sandbox = rig.sandbox
    assert sandbox is not None
    await rig.publish(rig.make_requests(REQUESTS, id_prefix="wh"))
    answers: dict[str, list[tuple[int, str]]] = {
        "forged": [],
        "replayed": [],
        "contradicting": [],
        "fuzzed_signed": [],
        "fuzzed_unsigned": [],
        "nested": [],
        "too_large": [],
    }

    # Forged webhooks for live calls: calls the sandbox has not finished, as soon as it has them.
    live: list[str] = []
    seen: set[str] = set()

    async def forge_for_new_calls() -> bool:
        for call in await sandbox.process.aground_truth():
            request_id = call["metadata"].get("dialer_request_id")
            if request_id in seen or len(live) >= FORGED:
                continue
            seen.add(request_id)
            if call["completed"]:
                continue  # already over: not a live call any more
            live.append(request_id)
            body = json.dumps(
                {
                    "call_id": call["call_id"],
                    "completed": True,
                    "status": "failed",
                    "queue_status": "complete",
                    "error_message": "forged",
                    "to": call["phone_number"],
                    "metadata": {"dialer_request_id": request_id},
                }
            ).encode()
            for signature in forgeries(rig.webhook_secret, body):
                answers["forged"].append(await post_webhook(service, body, signature))
        return len(live) >= FORGED or len(seen) >= REQUESTS

    await poll(forge_for_new_calls, timeout_s=90, what="live calls to forge webhooks for")
    settled = await rig.settle(timeout_s=90)

    queued_ids = {rid: e.body["call_id"] for rid, e in rig.recorder.first("call.queued").items()}
    await _replay_and_contradict(rig, service, sandbox, queued_ids, answers)
    await _fuzz(rig, service, rng, list(queued_ids.values()), answers)
    big = b'{"call_id":"' + b"x" * (5 * 1024 * 1024) + b'"}'
    answers["too_large"].append(await post_webhook(service, big, sign(rig.webhook_secret, big)))

    # A signed body nested 1,000 levels.
    nested = nested_body(NESTING)
    answers["nested"].append(await post_webhook(service, nested, sign(rig.webhook_secret, nested)))
    ready_after, _ = await service.readyz()

    final_events: Counter[str] = Counter(
        e.request_id
        for e in rig.recorder.events.values()
        if e.type in FINAL_EVENTS and e.request_id
    )
    truth = {
        c["metadata"].get("dialer_request_id"): c for c in await sandbox.process.aground_truth()
    }
    matches = {}
    for request_id in live:
        final = [
            e
            for e in rig.recorder.events.values()
            if e.request_id == request_id and e.type in FINAL_EVENTS
        ]
        status = final[0].body.get("status") if final else None
        matches[request_id] = status == truth.get(request_id, {}).get("status")
    webhooks = metric_values(await service.metrics(), "dialer_webhooks_total")
    tally = await rig.tally(
        settled=settled,
        answers={k: dict(Counter(code for code, _ in v)) for k, v in answers.items()},
        webhooks_metric=webhooks,
    )
    return WebhookRun(
        tally=tally,
        answers=answers,
        final_events_per_request=final_events,
        forged_ids=live,
        outcome_matches_bland=matches,
        webhooks_metric=webhooks,
        ready_after=ready_after,
    )


@dataclass
class EarlyRun:
    """The tally, how the outcomes arrived, and how long after Bland's webhook."""

    tally: Tally
    webhooks_metric: dict[str, float]
    sources: Counter[str]
    latency_s: dict[str, Any]
    delayed: int
    # Requests whose webhook was delivered at least 0.5 s before their held answer left the
    # link (the webhook certainly overtook the commit), and how their outcome came.
    early_sources: dict[str, str] = field(default_factory=dict)


async def _early(rig: Rig, database: str, *, held: bool) -> EarlyRun:
    """held: the BlandLink holds every answer to POST /v1/calls for 1.5 s (the webhook arrives
    long before the commit); otherwise the webhook races the dispatcher's commit as it comes,
    on PostgreSQL over a link slowed by 10 ms per chunk (the commit takes a little longer)."""
    (service,) = await rig.boot(database, through_link=held)
    sandbox = rig.sandbox
    assert sandbox is not None
    if held:
        assert rig.bland_link is not None
        rig.bland_link.configure(delay_share=1.0, delay_s=HELD_S)
    if rig.pg_link is not None and not held:
        rig.pg_link.delay_s = 0.01
    await rig.publish(rig.make_requests(REQUESTS, id_prefix="early"))
    settled = await rig.settle(timeout_s=120)
    truth = await sandbox.process.aground_truth()
    request_of = {c["call_id"]: c["metadata"].get("dialer_request_id") for c in truth}
    delivered: dict[str, float] = {}
    for entry in await sandbox.process.awebhooks():
        request_id = request_of.get(entry.get("call_id"))
        if request_id and entry.get("delivered") and request_id not in delivered:
            delivered[request_id] = datetime.fromisoformat(entry["at"]).timestamp()
    finals = [e for e in rig.recorder.events.values() if e.type in FINAL_EVENTS and e.request_id]
    latency = [e.wall - delivered[e.request_id] for e in finals if e.request_id in delivered]
    polled = [
        e.wall - delivered[e.request_id]
        for e in finals
        if e.request_id in delivered and e.body.get("source") == "poll"
    ]
    sources = Counter(str(e.body.get("source")) for e in finals)
    webhooks = metric_values(await service.metrics(), "dialer_webhooks_total")
    delayed = len(rig.bland_link.delayed) if rig.bland_link is not None else 0
    released = rig.bland_link.released_at if rig.bland_link is not None else {}
    source_of = {e.request_id: str(e.body.get("source")) for e in finals if e.request_id}
    early_sources = {
        rid: source_of.get(rid, "none")
        for rid, at in delivered.items()
        if rid in released and at < released[rid] - 0.5
    }
    tally = await rig.tally(
        settled=settled,
        webhooks_metric=webhooks,
        final_sources=dict(sources),
        webhook_to_final_event_s=quantiles(latency),
        webhook_to_final_event_when_polled_s=quantiles(polled),
        answers_held=delayed,
        webhooks_well_before_the_answer=len(early_sources),
    )
    return EarlyRun(tally, webhooks, sources, quantiles(latency), delayed, early_sources)


HOSTILE = Scenario("webhooks forged/replayed/fuzzed/nested", _hostile, weight_s=35)
EARLY_SQLITE = Scenario(
    "early webhooks, answers held 1.5 s (sqlite)", lambda rig: _early(rig, "sqlite", held=True)
)
EARLY_POSTGRES = Scenario(
    "early webhooks, answers held 1.5 s (postgres)", lambda rig: _early(rig, "postgres", held=True)
)
RACE_POSTGRES = Scenario(
    "webhooks racing the commit (postgres)", lambda rig: _early(rig, "postgres", held=False)
)


@pytest.mark.scenario(HOSTILE)
def test_forged_webhooks_are_refused_and_change_nothing(outcome: WebhookRun) -> None:
    assert len(outcome.forged_ids) >= 10, "too few live calls to forge webhooks for"
    assert {code for code, _ in outcome.answers["forged"]} == {401}
    assert all(outcome.outcome_matches_bland.values()), outcome.outcome_matches_bland


@pytest.mark.scenario(HOSTILE)
def test_replayed_and_contradicting_webhooks_change_nothing(outcome: WebhookRun) -> None:
    for kind in ("replayed", "contradicting"):
        assert outcome.answers[kind], kind
        assert all(code == 200 and "replay" in text for code, text in outcome.answers[kind]), (
            kind,
            outcome.answers[kind][:5],
        )
    assert_settled_once(outcome.tally)
    several = {rid: n for rid, n in outcome.final_events_per_request.items() if n > 1}
    assert not several, f"requests with more than one final event: {several}"


@pytest.mark.scenario(HOSTILE)
def test_fuzzed_webhooks_never_get_a_5xx_and_unsigned_ones_get_401(outcome: WebhookRun) -> None:
    signed = Counter(code for code, _ in outcome.answers["fuzzed_signed"])
    unsigned = Counter(code for code, _ in outcome.answers["fuzzed_unsigned"])
    assert set(unsigned) == {401}, unsigned
    assert all(code < 500 for code in signed), signed
    assert {code for code, _ in outcome.answers["too_large"]} == {413}
    assert outcome.ready_after == 200


@pytest.mark.scenario(HOSTILE)
def test_a_signed_deeply_nested_webhook_is_a_400(outcome: WebhookRun) -> None:
    assert [code for code, _ in outcome.answers["nested"]] == [400], outcome.answers["nested"]


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("sqlite", marks=pytest.mark.scenario(EARLY_SQLITE)),
        pytest.param("postgres", marks=pytest.mark.scenario(EARLY_POSTGRES)),
    ],
)
def test_a_webhook_long_before_the_commit_is_kept(outcome: EarlyRun, database: str) -> None:
    # Per request, not by the unknown_call metric: on a starved machine a webhook may come
    # late, meet the commit, and be finding 2 instead (see the racing scenario).
    assert outcome.delayed >= REQUESTS // 2, "the answers were not held back"
    assert len(outcome.early_sources) >= REQUESTS // 4, "too few webhooks came well before"
    assert_settled_once(outcome.tally)
    polled = {rid: src for rid, src in outcome.early_sources.items() if src != "webhook"}
    assert not polled, f"webhooks well before the commit, outcome not from them: {polled}"


@pytest.mark.scenario(RACE_POSTGRES)
def test_webhooks_racing_the_commit_lose_nothing(outcome: EarlyRun) -> None:
    assert_settled_once(outcome.tally)


@pytest.mark.scenario(RACE_POSTGRES)
def test_a_webhook_racing_the_commit_is_kept(outcome: EarlyRun) -> None:
    assert outcome.webhooks_metric.get('{result="unknown_call"}', 0.0) == 0.0, (
        outcome.webhooks_metric
    )
    assert set(outcome.sources) == {"webhook"}, outcome.sources


async def _replay_and_contradict(
    rig: Rig,
    service: Any,
    sandbox: Any,
    queued_ids: dict[str, str],
    answers: dict[str, list[tuple[int, str]]],
) -> None:
    """Replays and contradictions of settled calls, signed with the real secret."""
    for request_id in list(queued_ids)[:REPLAYED]:
        async with httpx.AsyncClient(
            base_url=sandbox.base_url, headers=sandbox.process.headers, timeout=10
        ) as client:
            details = (await client.get(f"/v1/calls/{queued_ids[request_id]}")).json()
        genuine = json.dumps(details, separators=(",", ":")).encode()
        for _ in range(2):
            answers["replayed"].append(
                await post_webhook(service, genuine, sign(rig.webhook_secret, genuine))
            )
        flipped = dict(
            details,
            status="busy" if details.get("status") != "busy" else "completed",
            answered_by="no-answer",
        )
        contradicting = json.dumps(flipped).encode()
        answers["contradicting"].append(
            await post_webhook(service, contradicting, sign(rig.webhook_secret, contradicting))
        )


async def _fuzz(
    rig: Rig,
    service: Any,
    rng: Any,
    call_ids: list[str],
    answers: dict[str, list[tuple[int, str]]],
) -> None:
    """Fuzzed bodies, half signed."""
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(FUZZED):
            body = fuzz_body(rng, call_ids)
            if rng.random() < 0.5:
                signature = sign(rig.webhook_secret, body)
                answers["fuzzed_signed"].append(
                    await post_webhook(service, body, signature, client)
                )
            else:
                signature = f"{rng.getrandbits(256):064x}"
                answers["fuzzed_unsigned"].append(
                    await post_webhook(service, body, signature, client)
                )
