"""Pure decoding and planning of request deliveries."""

from __future__ import annotations

import json

import pytest

from consumers.decode import (
    Cancel,
    Create,
    Decoded,
    Delivery,
    Reject,
    Undecodable,
    decode,
    plan,
    request_kind,
)
from schemas.envelope import content_request_id

LIMIT = 64 * 1024
VALID = {"phone_number": "+15555550142", "task": "Say hello."}


def delivery(body: object = VALID, **props: object) -> Delivery:
    """A delivery of a JSON body (bytes pass through)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    props.setdefault("routing_key", "call.create")
    return Delivery(body=raw, **props)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("routing_key", "amqp_type", "kind"),
    [
        ("call.create", None, "call.create"),
        ("call.cancel", "call.create", "call.cancel"),
        ("tenant-7", "call.create", "call.create"),
        ("tenant-7", None, "tenant-7"),
        ("", None, ""),
    ],
)
def test_the_kind_is_the_routing_key_else_the_type(
    routing_key: str, amqp_type: str | None, kind: str
) -> None:
    assert request_kind(routing_key, amqp_type) == kind


def test_message_id_is_the_request_id() -> None:
    decoded = decode(delivery(message_id="abc-1"), LIMIT)
    assert isinstance(decoded, Decoded)
    assert decoded.request_id == "abc-1"
    assert decoded.id_error is None


def test_without_message_id_the_id_is_the_content_hash_of_kind_and_body() -> None:
    spaced = json.dumps(VALID, indent=4).encode()
    first = decode(delivery(spaced), LIMIT)
    second = decode(delivery(dict(reversed(VALID.items()))), LIMIT)
    assert first.request_id == second.request_id == content_request_id("call.create", spaced)
    other_kind = decode(delivery(VALID, routing_key="call.cancel"), LIMIT)
    assert other_kind.request_id != first.request_id


def test_an_unusable_message_id_falls_back_to_the_hash_and_says_why() -> None:
    decoded = decode(delivery(message_id="has space"), LIMIT)
    assert isinstance(decoded, Decoded)
    assert decoded.request_id.startswith("sha256:")
    assert decoded.id_error is not None
    result = plan(delivery(message_id="x" * 129), LIMIT, replace_webhook=False)
    assert isinstance(result.action, Reject)
    assert result.action.reason == "invalid_request"


@pytest.mark.parametrize(
    ("body", "props", "reason"),
    [
        (b"x" * (LIMIT + 1), {}, "too_large"),
        (b"\xff" * (LIMIT + 1), {"content_type": "text/plain"}, "too_large"),  # size first
        (b"{}", {"content_type": "text/plain"}, "invalid_content_type"),
        (b"{}", {"content_encoding": "gzip"}, "invalid_encoding"),
        (b'{"a": "\xff"}', {}, "invalid_encoding"),
        (b"{nope", {}, "invalid_json"),
        (b"[1, 2]", {}, "invalid_json"),
        (b'"text"', {}, "invalid_json"),
        (b"null", {}, "invalid_json"),
    ],
)
def test_undecodable_bodies_name_their_reason(
    body: bytes, props: dict[str, str], reason: str
) -> None:
    decoded = decode(delivery(body, message_id="m", **props), LIMIT)
    assert isinstance(decoded, Undecodable)
    assert decoded.reason == reason
    assert decoded.request_id == "m"
    assert decoded.error


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "application/json; charset=utf-8"]
)
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    assert isinstance(decode(delivery(content_type=content_type), LIMIT), Decoded)


def test_a_valid_create_becomes_a_new_call_without_the_dialer_object() -> None:
    body = {**VALID, "phone_number": "5555550142", "dialer": {"priority": 2}}
    result = plan(
        delivery(body, message_id="r", correlation_id="c", reply_to="q"),
        LIMIT,
        replace_webhook=False,
    )
    assert isinstance(result.action, Create)
    call = result.action.call
    assert (call.request_id, call.correlation_id, call.reply_to) == ("r", "c", "q")
    assert call.phone_number == "+15555550142"
    assert "dialer" not in call.body
    assert call.options.priority == 2


@pytest.mark.parametrize("replace", [True, False])
def test_the_publishers_webhook_is_kept_aside_only_when_we_have_ours(replace: bool) -> None:
    body = {**VALID, "webhook": "https://publisher.example/hook"}
    result = plan(delivery(body), LIMIT, replace_webhook=replace)
    assert isinstance(result.action, Create)
    call = result.action.call
    if replace:
        assert call.publisher_webhook == "https://publisher.example/hook"
        assert "webhook" not in call.body
    else:
        assert call.publisher_webhook is None
        assert call.body["webhook"] == "https://publisher.example/hook"


def test_an_invalid_create_is_rejected_with_bland_errors_and_not_dead_lettered() -> None:
    result = plan(delivery({"task": "x"}), LIMIT, replace_webhook=False)
    assert result.action == Reject(
        "invalid_request", ["Missing required parameter: phone_number."], dead_letter=False
    )


def test_undecodable_requests_are_dead_lettered() -> None:
    result = plan(delivery(b"{nope"), LIMIT, replace_webhook=False)
    assert isinstance(result.action, Reject)
    assert result.action.dead_letter


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ({"request_id": "r1"}, Cancel("r1", None)),
        ({"call_id": "c1"}, Cancel(None, "c1")),
    ],
)
def test_cancels_name_one_id(body: dict[str, str], action: Cancel) -> None:
    assert plan(delivery(body, routing_key="call.cancel"), LIMIT, False).action == action


@pytest.mark.parametrize(
    "body", [{}, {"request_id": "a", "call_id": "b"}, {"batch_id": "b1"}, {"x": 1}]
)
def test_bad_cancels_are_rejected(body: dict[str, str]) -> None:
    action = plan(delivery(body, routing_key="call.cancel"), LIMIT, False).action
    assert isinstance(action, Reject)
    assert action.reason == "invalid_request"
    assert not action.dead_letter


@pytest.mark.parametrize("kind", ["call.explode", "batch.explode"])
def test_other_kinds_are_unsupported_naming_the_kind(kind: str) -> None:
    result = plan(delivery(VALID, routing_key=kind), LIMIT, False)
    assert isinstance(result.action, Reject)
    assert result.action.reason == "unsupported_kind"
    assert kind in result.action.errors[0]
