"""Request validation with the project's schemas (Bland's rules and messages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sandbox.calls import webhook_problem
from schemas.batch import validate_batch
from schemas.phone import PhoneNumberError, normalize_phone
from schemas.validation import BlandValidationError
from schemas.validation import validate_call as validate_call_body

T = TypeVar("T")


class InvalidRequest(Exception):  # noqa: N818 - mirrors BlandValidationError
    """Bland's 400: `errors` are its messages."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _run(validator: Callable[[object], T], body: object) -> T:
    """A schemas validator, its error turned into InvalidRequest (Bland's 400)."""
    try:
        return validator(body)
    except BlandValidationError as exc:
        raise InvalidRequest(list(exc.errors)) from exc


WEBHOOK_KEYS = ("webhook", "status_webhook", "batch_webhook")


def _as_https(body: dict[str, Any]) -> dict[str, Any]:
    """The body with http webhooks shown as https, so the schema's https rule passes."""
    changed = dict(body)
    for key in WEBHOOK_KEYS:
        url = body.get(key)
        if isinstance(url, str) and url.startswith("http://"):
            changed[key] = "https://" + url.removeprefix("http://")
    return changed


def validate_call(body: object, *, allow_http: bool, strict_https: bool) -> str:
    """Validate a POST /v1/calls body; returns the E.164 phone number."""
    if not isinstance(body, dict):
        raise InvalidRequest(["Call parameters must be an object."])
    problem = webhook_problem(body.get("webhook"), allow_http=allow_http, strict=strict_https)
    if problem:
        raise InvalidRequest([problem])
    return _run(validate_call_body, _as_https(body)).phone_number


def validate_batch_v2(body: object, *, allow_http: bool, strict_https: bool) -> None:
    """Validate a POST /v2/batches/create body (missing phone numbers fail later)."""
    if not isinstance(body, dict):
        raise InvalidRequest(["Call parameters must be an object."])
    glob = body.get("global")
    objects = body.get("call_objects")
    if not isinstance(glob, dict):
        raise InvalidRequest(["Missing required parameter: global."])
    if not isinstance(objects, list) or not objects:
        raise InvalidRequest(["Missing required parameter: call_objects."])
    webhooks = [glob.get("webhook"), body.get("status_webhook")]
    webhooks += [o.get("webhook") for o in objects if isinstance(o, dict)]
    for url in webhooks:
        problem = webhook_problem(url, allow_http=allow_http, strict=strict_https)
        if problem:
            raise InvalidRequest([problem])
    with_phone = [o for o in objects if not isinstance(o, dict) or o.get("phone_number")]
    if with_phone:
        # Entries without a phone number fail the batch later (source_invalid), as Bland does.
        _run(validate_batch, _strip_http({**body, "call_objects": with_phone}))
        return
    if "phone_number" in glob:
        raise InvalidRequest(["phone_number is not allowed in global."])
    if "task" not in glob and "pathway_id" not in glob:
        raise InvalidRequest(["Missing required parameter: task."])


def _strip_http(body: dict[str, Any]) -> dict[str, Any]:
    glob = body.get("global")
    objects = body.get("call_objects")
    return {
        **body,
        "global": _as_https(glob) if isinstance(glob, dict) else glob,
        "call_objects": [_as_https(o) if isinstance(o, dict) else o for o in objects or []],
        **{k: v for k, v in _as_https(body).items() if k in WEBHOOK_KEYS},
    }


def validate_batch_v1(body: object, *, allow_http: bool, strict_https: bool) -> None:
    """Minimal checks of a legacy POST /v1/batches body."""
    if not isinstance(body, dict):
        raise InvalidRequest(["Call parameters must be an object."])
    if not isinstance(body.get("base_prompt"), str):
        raise InvalidRequest(["Missing required parameter: base_prompt."])
    rows = body.get("call_data")
    if not isinstance(rows, list) or not rows:
        raise InvalidRequest(["Missing required parameter: call_data."])
    for row in rows:
        if not isinstance(row, dict) or "phone_number" not in row:
            raise InvalidRequest(["Each call_data entry must have a phone_number."])
        normalize_or_raise(row["phone_number"])
    for url in (body.get("webhook"), body.get("batch_webhook")):
        problem = webhook_problem(url, allow_http=allow_http, strict=strict_https)
        if problem:
            raise InvalidRequest([problem])
    _run(validate_batch, _as_https(body))


def normalize_or_raise(value: object) -> str:
    """E.164 of a number, or InvalidRequest with Bland's message."""
    try:
        return normalize_phone(value)
    except PhoneNumberError as exc:
        raise InvalidRequest([exc.message]) from exc
