"""Bland's answers and httpx's failures mapped onto the error tree (bland-api.md 2.3, 2.4, 7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.bland.classify import classify_create, classify_read, classify_transport, describe
from service.errors import (
    AccountError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)

CALL_ID = "9d404c1b-6a23-4426-953a-a52c392ff8f1"
SAME_NUMBER = (
    "Calls can only be sent every 10 seconds to the same number. Please try again in a few seconds."
)


def error(message: str, **extra: Any) -> dict[str, Any]:
    """Bland's common error envelope."""
    return {"status": "error", "message": message, **extra}


def test_success_returns_the_call_id() -> None:
    body = {"status": "success", "message": "Call successfully queued.", "call_id": CALL_ID}
    assert classify_create(200, {**body, "batch_id": None}) == CALL_ID
    assert classify_create(200, {"status": "success", "call_id": CALL_ID}) == CALL_ID


@pytest.mark.parametrize(
    "payload",
    [None, {"status": "success"}, {"call_id": ""}, {"status": "error", "call_id": CALL_ID}, []],
)
def test_a_200_without_a_call_id_is_an_unknown_outcome(payload: object) -> None:
    with pytest.raises(UnknownOutcomeError):
        classify_create(200, payload)


@pytest.mark.parametrize(
    "message",
    [
        "Rate limit exceeded",
        "Rate limit exceeded for newly created accounts. Please try again soon.",
        "International rate limit exceeded for your account type.",
        "Something new Bland adds later",
    ],
)
def test_429s_wait_without_a_floor(message: str) -> None:
    with pytest.raises(ThrottledError) as caught:
        classify_create(429, error(message))
    assert caught.value.retry_after_s is None
    assert str(caught.value) == message


def test_same_number_429_waits_at_least_ten_seconds() -> None:
    with pytest.raises(ThrottledError) as caught:
        classify_create(429, error(SAME_NUMBER))
    assert caught.value.retry_after_s == 10.0


def test_a_blacklisted_number_is_final_although_it_comes_as_429() -> None:
    with pytest.raises(PermanentError) as caught:
        classify_create(429, error("This number is blacklisted."))
    assert caught.value.http_status == 429
    assert caught.value.errors == ["This number is blacklisted."]


def test_a_throttled_error_is_never_permanent() -> None:
    with pytest.raises(TransientError):
        classify_create(429, {"not": "json envelope"})


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (401, {"data": None, "errors": [{"error": "AUTH_FAILURE", "message": "Unauthorized"}]}),
        (402, error("Insufficient balance.")),
        (403, error("The Bland Team has flagged your account for security purposes. ...")),
        (404, "<html>not found</html>"),
        (405, None),
    ],
)
def test_account_and_non_bland_refusals_pause_everything(status: int, payload: object) -> None:
    with pytest.raises(AccountError) as caught:
        classify_create(status, payload)
    assert caught.value.http_status == status


def test_validation_errors_keep_bland_message_and_list() -> None:
    errors = ["Missing required parameter: phone_number.", "Task must be a string."]
    with pytest.raises(PermanentError) as caught:
        classify_create(400, error("Invalid parameters", errors=errors))
    assert str(caught.value) == "Invalid parameters"
    assert caught.value.errors == errors
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("status", "payload", "message"),
    [
        (400, {"error": "Invalid phone number format"}, "Invalid phone number format"),
        (
            400,
            {"status": "DNC Error", "message": "Number found in DNC list."},
            "Number found in DNC list.",
        ),
        (404, error('Pathway with ID "p1" not found'), 'Pathway with ID "p1" not found'),
        (
            418,
            {"error": "OBJECTIVE_VALIDATION_ERROR", "details": "Custom validation response"},
            "OBJECTIVE_VALIDATION_ERROR: Custom validation response",
        ),
    ],
)
def test_every_bland_refusal_envelope_is_final(status: int, payload: object, message: str) -> None:
    with pytest.raises(PermanentError) as caught:
        classify_create(status, payload)
    assert str(caught.value) == message


def test_structured_error_items_become_strings() -> None:
    payload = error(
        "International calling requires a paid or verified account.",
        errors=[{"error": "CALL_UNPAID_INTL_BLOCK", "message": "paid account required"}],
    )
    assert describe(payload, 400) == (
        "International calling requires a paid or verified account.",
        ["paid account required"],
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 302])
def test_server_errors_may_hide_a_placed_call(status: int) -> None:
    with pytest.raises(UnknownOutcomeError):
        classify_create(status, error("Error triggering call. Please check your twilio account"))


def request() -> httpx.Request:
    """A POST like the dispatcher's."""
    return httpx.Request("POST", "https://bland.invalid/v1/calls")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused", request=request()),
        httpx.ConnectTimeout("slow connect", request=request()),
        httpx.PoolTimeout("no connection free", request=request()),
    ],
)
def test_failures_before_sending_are_transient(exc: httpx.HTTPError) -> None:
    classified = classify_transport(exc)
    assert type(classified) is TransientError


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("no answer", request=request()),
        httpx.WriteTimeout("half sent", request=request()),
        httpx.RemoteProtocolError("Server disconnected", request=request()),
        httpx.ReadError("reset", request=request()),
    ],
)
def test_failures_after_sending_are_unknown(exc: httpx.HTTPError) -> None:
    assert isinstance(classify_transport(exc), UnknownOutcomeError)
    assert isinstance(classify_transport(exc, sent_is_unknown=False), TransientError)


def test_reads_retry_server_errors_and_stop_on_account_errors() -> None:
    classify_read(200, {"calls": []})
    with pytest.raises(TransientError):
        classify_read(503, None)
    with pytest.raises(ThrottledError):
        classify_read(429, error("Rate limit exceeded"))
    with pytest.raises(AccountError):
        classify_read(401, None)
    with pytest.raises(PermanentError):
        classify_read(400, error("Invalid query parameter"))
