"""Webhook signatures over raw bytes, and Bland payloads mapped to outcomes (bland-api.md 3, 6)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from service.outcomes.payloads import is_final, is_post_call, parse_outcome, request_id_of
from service.outcomes.webhooks import verify_signature

SECRET = "whsec-test"
CALL_ID = "9d404c1b-6a23-4426-953a-a52c392ff8f1"


def sign(body: bytes, secret: str = SECRET) -> str:
    """Bland's X-Webhook-Signature: hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_call(**overrides: Any) -> dict[str, Any]:
    """A post-call payload shaped like Bland's call object."""
    payload: dict[str, Any] = {
        "call_id": CALL_ID,
        "c_id": CALL_ID,
        "call_length": 0.75,
        "corrected_duration": "45",
        "to": "+14155550100",
        "completed": True,
        "queue_status": "complete",
        "status": "completed",
        "answered_by": "human",
        "summary": "Spoke with the callee.",
        "disposition_tag": "COMPLETED_ACTION",
        "recording_url": "https://example.invalid/r.mp3",
        "error_message": None,
        "price": 0.068,
        "metadata": {"dialer_request_id": "req-1", "order": 7},
        "transcripts": [{"id": 1, "text": "hi", "user": "assistant"}],
    }
    payload.update(overrides)
    return payload


# ------------------------------------------------------------------ signatures

BODY = json.dumps(post_call(), separators=(",", ":")).encode()


def test_a_signature_of_the_raw_bytes_verifies() -> None:
    assert verify_signature(SECRET, BODY, sign(BODY))


@pytest.mark.parametrize(
    "signature",
    [None, "", "0" * 64, sign(BODY, "other-secret"), sign(BODY)[:-1], "é" * 64, sign(BODY) + "00"],
)
def test_anything_else_is_refused(signature: str | None) -> None:
    assert not verify_signature(SECRET, BODY, signature)


def test_one_changed_byte_is_refused() -> None:
    tampered = BODY.replace(b'"human"', b'"voicemail"')
    assert not verify_signature(SECRET, tampered, sign(BODY))


def test_the_same_json_reserialized_is_not_the_signed_body() -> None:
    reserialized = json.dumps(json.loads(BODY), indent=1).encode()
    assert not verify_signature(SECRET, reserialized, sign(BODY))


def test_prefix_case_and_whitespace_are_tolerated() -> None:
    signature = sign(BODY)
    assert verify_signature(SECRET, BODY, f"sha256={signature}")
    assert verify_signature(SECRET, BODY, f"SHA256={signature.upper()}")
    assert verify_signature(SECRET, BODY, f" {signature}\n")


def test_without_a_secret_nothing_verifies() -> None:
    assert not verify_signature("", BODY, sign(BODY, ""))


# ------------------------------------------------------------------ payloads


def test_a_post_call_payload_becomes_an_outcome() -> None:
    outcome = parse_outcome(post_call(), "webhook")

    assert outcome is not None
    assert outcome.call_id == CALL_ID
    assert outcome.status == "completed"
    assert outcome.answered_by == "human"
    assert outcome.call_length_min == 0.75
    assert outcome.duration_s == 45.0
    assert outcome.summary == "Spoke with the callee."
    assert outcome.disposition_tag == "COMPLETED_ACTION"
    assert outcome.recording_url == "https://example.invalid/r.mp3"
    assert outcome.error_message is None
    assert outcome.price_usd == 0.068
    assert outcome.metadata == {"dialer_request_id": "req-1", "order": 7}
    assert outcome.completed is True
    assert outcome.queue_status == "complete"
    assert outcome.source == "webhook"
    assert request_id_of(outcome) == "req-1"
    assert is_final(outcome)


@pytest.mark.parametrize(
    "payload",
    [
        {"message": "Call connected", "call_id": CALL_ID, "category": "call", "log_level": "info"},
        {
            "message": "TTS: 218ms",
            "call_id": CALL_ID,
            "category": "latency",
            "log_level": "performance",
        },
        {"call_id": CALL_ID, "event_type": "citations", "citations": []},
        {"completed": True, "status": "completed"},
        {"call_id": 42, "completed": True},
        [post_call()],
        "text",
        None,
    ],
)
def test_live_events_and_other_shapes_are_not_outcomes(payload: object) -> None:
    assert parse_outcome(payload, "webhook") is None


def test_live_event_even_with_completed_is_ignored() -> None:
    assert not is_post_call(
        {"call_id": CALL_ID, "completed": True, "category": "call", "log_level": "info"}
    )


def test_a_live_call_is_not_final() -> None:
    outcome = parse_outcome(post_call(completed=False, queue_status="started", status=None), "poll")

    assert outcome is not None
    assert outcome.source == "poll"
    assert not is_final(outcome)


@pytest.mark.parametrize(
    ("queue_status", "completed"),
    [
        ("complete", True),
        ("completed", True),
        ("call_error", True),
        ("started", False),
        (None, False),
    ],
)
def test_without_completed_the_queue_status_decides(
    queue_status: str | None, completed: bool
) -> None:
    payload = post_call(queue_status=queue_status)
    del payload["completed"]

    outcome = parse_outcome(payload, "poll")

    assert outcome is not None
    assert outcome.completed is completed


def test_completed_wins_over_the_queue_status() -> None:
    outcome = parse_outcome(post_call(completed=False, queue_status="complete"), "poll")
    assert outcome is not None
    assert outcome.completed is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("corrected_duration", "n/a"),
        ("corrected_duration", True),
        ("price", "NaN"),
        ("call_length", None),
    ],
)
def test_unreadable_numbers_become_none(field: str, value: object) -> None:
    outcome = parse_outcome(post_call(**{field: value}), "webhook")
    assert outcome is not None
    mapped = {
        "corrected_duration": "duration_s",
        "price": "price_usd",
        "call_length": "call_length_min",
    }
    assert getattr(outcome, mapped[field]) is None


def test_the_legacy_c_id_and_missing_metadata_are_handled() -> None:
    payload = post_call(metadata="not an object")
    del payload["call_id"]

    outcome = parse_outcome(payload, "webhook")

    assert outcome is not None
    assert outcome.call_id == CALL_ID
    assert outcome.metadata is None
    assert request_id_of(outcome) is None


def test_failed_call_keeps_bland_error_message() -> None:
    message = "Call failed. The number you dialed is busy. Please try again later."
    outcome = parse_outcome(post_call(status="failed", error_message=message), "webhook")
    assert outcome is not None
    assert outcome.error_message == message
    assert is_final(outcome)
