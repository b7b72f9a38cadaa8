"""Pure decoding of a request delivery: kind, request id, and a JSON object or the reason it is not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from consumers.batches import BatchIds, CancelBatch, CreateBatch, plan_batch, plan_batch_cancel
from schemas.call import to_bland_body
from schemas.envelope import (
    REQUEST_KINDS,
    CancelRequest,
    DncRequest,
    content_request_id,
    is_valid_request_id,
)
from schemas.phone import PhoneNumberError, normalize_phone
from schemas.validation import BlandValidationError, bland_messages, validate_call_create
from schemas.wire import MAX_DEPTH, depth, has_lone_surrogate
from service.ledger import NewCall

JSON_MEDIA_TYPE = "application/json"
_PLAIN_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8"})


@dataclass(frozen=True)
class Delivery:
    """What the consumer needs from an AMQP delivery (no broker objects: easy to test)."""

    body: bytes
    routing_key: str = ""
    type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    property_problems: tuple[str, ...] = ()  # AMQP properties that had to be excused


@dataclass(frozen=True)
class Decoded:
    """A request whose body is a JSON object."""

    kind: str
    request_id: str
    body: dict[str, Any]
    id_error: str | None = None  # set when message_id was present but unusable


@dataclass(frozen=True)
class Undecodable:
    """A request that cannot be read; `reason` is a `call.rejected` reason."""

    kind: str
    request_id: str
    reason: str
    error: str


def request_kind(routing_key: str, amqp_type: str | None) -> str:
    """The routing key when it names a kind, else the AMQP `type`, else the routing key."""
    if routing_key in REQUEST_KINDS:
        return routing_key
    if amqp_type:
        return amqp_type
    return routing_key


def request_id(kind: str, message_id: str | None, body: bytes) -> tuple[str, str | None]:
    """`message_id` when usable, else a content hash; plus an error when message_id was bad."""
    if message_id is None or message_id == "":
        return content_request_id(kind, body), None
    if is_valid_request_id(message_id):
        return message_id, None
    error = "message_id must be 1 to 128 printable ASCII characters."
    return content_request_id(kind, body), error


def decode(delivery: Delivery, max_body_bytes: int) -> Decoded | Undecodable:
    """Check properties, size, content type, encoding and JSON (size before any parsing)."""
    kind = request_kind(delivery.routing_key, delivery.type)
    rid, id_error = request_id(kind, delivery.message_id, delivery.body)
    if delivery.property_problems:
        errors = "; ".join(delivery.property_problems)
        return Undecodable(kind, rid, "unreadable_properties", f"AMQP properties: {errors}.")
    problem = _envelope_problem(delivery, max_body_bytes)
    if problem is not None:
        return Undecodable(kind, rid, *problem)
    parsed = _parse_body(delivery.body)
    if isinstance(parsed, tuple):
        return Undecodable(kind, rid, *parsed)
    return Decoded(kind, rid, parsed, id_error)


def _envelope_problem(delivery: Delivery, max_body_bytes: int) -> tuple[str, str] | None:
    size = len(delivery.body)
    if size > max_body_bytes:
        return "too_large", f"Request body is {size} bytes; the limit is {max_body_bytes} bytes."
    content_type = delivery.content_type
    if content_type and content_type.split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        error = f"content_type must be {JSON_MEDIA_TYPE}, not {content_type[:100]!r}."
        return "invalid_content_type", error
    encoding = (delivery.content_encoding or "").strip().lower()
    if encoding not in _PLAIN_ENCODINGS:
        return (
            "invalid_encoding",
            f"content_encoding {encoding[:50]!r} is not supported; send plain UTF-8.",
        )
    return None


def _parse_body(raw: bytes) -> dict[str, Any] | tuple[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_encoding", f"Body is not valid UTF-8: {exc.reason}."
    try:
        body = json.loads(text)
    except ValueError as exc:
        return "invalid_json", f"Body is not valid JSON: {exc}."
    except RecursionError:
        return "invalid_json", "Body is nested too deeply to be read."
    problem = _shape_problem(body, text)
    return body if problem is None else problem


def _shape_problem(body: Any, text: str) -> tuple[str, str] | None:
    """Why a parsed body cannot be a request: not an object, too deep, not text."""
    if not isinstance(body, dict):
        return "invalid_json", f"Body must be a JSON object, not {_json_type(body)}."
    if depth(body) > MAX_DEPTH:
        return "invalid_json", f"Body is nested deeper than {MAX_DEPTH} levels."
    if has_lone_surrogate(text, body):
        return "invalid_encoding", "Body holds a lone surrogate escape (e.g. \\ud800): not text."
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# ---------------------------------------------------------------- what to do with a delivery

SUPPORTED_KINDS = (
    "call.create",
    "call.cancel",
    "batch.create",
    "batch.cancel",
    "dnc.add",
    "dnc.remove",
)


@dataclass(frozen=True)
class Create:
    """Write a new call request."""

    call: NewCall


@dataclass(frozen=True)
class Cancel:
    """Cancel a request (by request id or Bland call id)."""

    request_id: str | None
    call_id: str | None


@dataclass(frozen=True)
class Dnc:
    """Add a number to the do-not-call list, or take it off."""

    add: bool
    phone_number: str
    reason: str | None


@dataclass(frozen=True)
class Reject:
    """Record a rejection; `dead_letter` also copies the raw message to the dead-letter queue."""

    reason: str
    errors: list[str]
    dead_letter: bool


@dataclass(frozen=True)
class Plan:
    """A delivery's ids and the one action it calls for."""

    kind: str
    request_id: str
    correlation_id: str | None
    reply_to: str | None
    action: Create | Cancel | Dnc | Reject | CreateBatch | CancelBatch
    phone_number: str | None = None


def plan(
    delivery: Delivery,
    max_body_bytes: int,
    replace_webhook: bool,
    default_dispatch: str = "expand",
) -> Plan:
    """Decide what a delivery asks for; never raises for bad input."""
    decoded = decode(delivery, max_body_bytes)
    # A reply_to that was not readable as sent names no queue we could answer to.
    ids = (delivery.correlation_id, None if delivery.property_problems else delivery.reply_to)
    if isinstance(decoded, Undecodable):
        action = Reject(decoded.reason, [decoded.error], dead_letter=True)
        return Plan(decoded.kind, decoded.request_id, *ids, action)
    kind, rid = decoded.kind, decoded.request_id
    if decoded.id_error is not None:
        return Plan(kind, rid, *ids, Reject("invalid_request", [decoded.id_error], False))
    if kind == "call.create":
        return _plan_create(decoded, delivery, replace_webhook)
    return Plan(kind, rid, *ids, _other_action(decoded, ids, replace_webhook, default_dispatch))


def _other_action(
    decoded: Decoded,
    ids: tuple[str | None, str | None],
    replace_webhook: bool,
    default_dispatch: str,
) -> Cancel | Dnc | Reject | CreateBatch | CancelBatch:
    """What a request other than call.create asks for (unsupported kinds are rejected)."""
    kind = decoded.kind
    if kind == "call.cancel":
        return _cancel_action(decoded.body)
    if kind in ("dnc.add", "dnc.remove"):
        return dnc_action(kind, decoded.body)
    if kind in ("batch.create", "batch.cancel"):
        return _batch_action(decoded, ids, replace_webhook, default_dispatch)
    error = f"Unsupported request kind {kind!r}; this service accepts {', '.join(SUPPORTED_KINDS)}."
    return Reject("unsupported_kind", [error], dead_letter=False)


def unprocessable(delivery: Delivery, exc: BaseException) -> Plan:
    """A delivery our own code failed to plan: rejected and kept in the dead letters."""
    kind = request_kind(delivery.routing_key, delivery.type)
    error = f"The service could not process this request ({type(exc).__name__})."
    return Plan(
        kind,
        content_request_id(kind, delivery.body),
        delivery.correlation_id,
        delivery.reply_to,
        Reject("unprocessable", [error], dead_letter=True),
    )


def _plan_create(decoded: Decoded, delivery: Delivery, replace_webhook: bool) -> Plan:
    ids = (delivery.correlation_id, delivery.reply_to)
    try:
        model, options = validate_call_create(decoded.body)
    except BlandValidationError as exc:
        action = Reject("invalid_request", list(exc.errors), dead_letter=False)
        return Plan(decoded.kind, decoded.request_id, *ids, action)
    body = to_bland_body(model)
    body.pop("dialer", None)
    # Webhook rule (docs/internals.md): with our own webhook configured, the publisher's
    # URL is kept aside and Bland's payload is relayed to it after we record the outcome.
    publisher_webhook = body.pop("webhook", None) if replace_webhook else None
    call = NewCall(
        request_id=decoded.request_id,
        correlation_id=delivery.correlation_id,
        reply_to=delivery.reply_to,
        phone_number=model.phone_number,
        body=body,
        options=options,
        publisher_webhook=publisher_webhook,
    )
    return Plan(decoded.kind, decoded.request_id, *ids, Create(call), model.phone_number)


def _batch_action(
    decoded: Decoded,
    ids: tuple[str | None, str | None],
    replace_webhook: bool,
    default_dispatch: str,
) -> CreateBatch | CancelBatch | Reject:
    planned: CreateBatch | CancelBatch | list[str]
    if decoded.kind == "batch.cancel":
        planned = plan_batch_cancel(decoded.body)
    else:
        planned = plan_batch(
            decoded.body,
            BatchIds(decoded.request_id, *ids),
            replace_webhook=replace_webhook,
            default_dispatch=default_dispatch,
        )
    if isinstance(planned, list):
        return Reject("invalid_request", planned, dead_letter=False)
    return planned


def _cancel_action(body: dict[str, Any]) -> Cancel | Reject:
    try:
        request = CancelRequest.model_validate(body)
    except ValidationError as exc:
        return Reject("invalid_request", bland_messages(exc), dead_letter=False)
    if request.batch_id is not None:
        error = "batch_id cancels a batch: publish it as batch.cancel."
        return Reject("invalid_request", [error], dead_letter=False)
    return Cancel(request.request_id, request.call_id)


def dnc_action(kind: str, body: dict[str, Any]) -> Dnc | Reject:
    """A dnc.add / dnc.remove body as its action, or the rejection naming the field."""
    try:
        request = DncRequest.model_validate(body)
        phone = normalize_phone(request.phone_number)
    except ValidationError as exc:
        return Reject("invalid_request", bland_messages(exc), dead_letter=False)
    except PhoneNumberError as exc:
        return Reject("invalid_request", [f"phone_number: {exc.message}"], dead_letter=False)
    return Dnc(kind == "dnc.add", phone, request.reason)
