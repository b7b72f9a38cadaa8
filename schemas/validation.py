"""Validation with Bland's error messages: one list of strings, each naming its field."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.call import PATH, CallRequest, js_type
from schemas.envelope import DialerOptions

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
INVALID_PARAMETERS = "Invalid parameters"
NOT_AN_OBJECT = "Call parameters must be an object."

_BOOLEANS = (
    "answered_by_enabled", "block_interruptions", "sensitive_voicemail_detection",
    "ignore_button_press", "noise_cancellation", "stream_post_transfer_transcript",
    "geospatial_dialing", "amd", "ivr_mode", "reduce_latency", "local_dialing", "test_mode",
)  # fmt: skip
_OBJECTS = (
    "post_call_evals", "analysis_schema", "dispatch_hours", "calendly", "dialing_strategy",
    "voicemail.sms",
)  # fmt: skip
_STRINGS = (
    "pathway_id", "start_node_id", "persona_id", "analysis_prompt", "analysis_preset",
    "label", "campaign_id", "base_prompt", "description", "b_cid",
)  # fmt: skip
_ARRAYS_OF_STRINGS = ("citation_schema_ids", "dispositions", "available_tags")

# Path pattern (list indexes as *) -> error kind -> message. Kind "type" covers every type
# error; {type} is the JavaScript type of the input, {path} the concrete path.
MESSAGES: dict[str, dict[str, str]] = {
    "": {"type": NOT_AN_OBJECT},
    "phone_number": {"missing": "Missing required parameter: phone_number."},
    "voice": {"type": "Voice must be a string."},
    "model": {"type": "Invalid model option. Options are: base, turbo."},
    "language": {"type": "Invalid language code"},
    "wait_for_greeting": {"type": "wait_for_greeting must be a boolean."},
    "record": {"type": "Record must be a boolean"},
    "pronunciation_guide": {"type": "Invalid pronunciation guide type."},
    "pronunciation_guide.*": {"type": "Invalid pronunciation guide type."},
    "temperature": {
        "type": "Temperature must be a number",
        "range": "Temperature must be between 0 and 1.",
    },
    "interruption_threshold": {
        "type": "interruption_threshold must be a number.",
        "range": "interruption_threshold must be a positive number.",
    },
    "interruptibility": {
        "type": "interruptibility must be an integer.",
        "range": "interruptibility must be 0, 1, 2 or 3.",
    },
    "dialing_strategy.type": {"type": "dialing_strategy.type must be local or custom_pooling."},
    "timezone": {"type": "Timezone must be a string."},
    "start_time": {"type": "start_time must be a string."},
    "max_duration": {
        "type": "Max duration must be a number",
        "greater_than_equal": "Max duration must be at least 1",
        "less_than_equal": "max_duration must be at most 12 hours.",
    },
    "background_track": {
        "type": "Invalid background_track option. Options are: office, cafe, restaurant, none."
    },
    "voicemail": {"type": "voicemail must be an object."},
    "voicemail.action": {
        "type": "Invalid voicemail action. Must be one of: hangup, leave_message, ignore"
    },
    "voicemail.sensitive": {"type": "voicemail.sensitive must be a boolean."},
    "voicemail_sms": {"type": "voicemail_sms must be an object. type: {type}"},
    "voicemail_action": {
        "type": "Invalid voicemail_action. Options are: hangup, leave_message, ignore."
    },
    "summary_prompt": {
        "type": "Summary prompt must be a string.",
        "string_too_long": "Summary prompt must be less than 2000 characters.",
    },
    "retry": {"type": "Retry must be an object."},
    "request_data": {"type": "request_data must be an object."},
    "metadata": {"type": "metadata must be an object."},
    "webhook": {"type": "webhook must be a string that starts with https://."},
    "webhook_events": {"type": "webhook_events must be an array of strings."},
    "webhook_events.*": {
        "type": "Invalid webhook_events option. Options are: queue, call, latency, webhook, tool, dynamic_data, citations, evals, post_transfer_transcript."
    },
    "dynamic_data.*": {"type": "Invalid dynamic data: {path} must be an object."},
    "dynamic_data.*.url": {
        "type": "Invalid dynamic data: {path} must be a string.",
        "missing": "Invalid dynamic data: {path} is required.",
    },
    "precall_dtmf_sequence": {"type": "Precall DTMF sequence must be a valid DTMF sequence"},
    "guard_rails": {"type": "guard_rails must be an array."},
    "guard_rails.*.type": {
        "type": "Invalid guard_rails type. Options are: tcpa:ai_disclosure, tcpa:self_introduction, tcpa:recording_disclosure, tcpa:opt_out, custom."
    },
    "voice_id": {"type": "voice_id must be a number."},
    **{name: {"type": f"{name} must be a boolean."} for name in _BOOLEANS},
    **{name: {"type": f"{name} must be an object."} for name in _OBJECTS},
    **{name: {"type": f"{name} must be a string."} for name in _STRINGS},
    **{name: {"type": f"{name} must be an array of strings."} for name in _ARRAYS_OF_STRINGS},
    **{
        f"{name}.*": {"type": f"{name} must be an array of strings."} for name in _ARRAYS_OF_STRINGS
    },
}
_RANGE_KINDS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})
_TYPE_NAMES = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


_GENERIC: dict[str, str] = {
    "missing": "Missing required parameter: {path}.",
    "literal_error": "{path} must be one of: {expected}.",
    "greater_than_equal": "{path} must be at least {ge}.",
    "greater_than": "{path} must be greater than {gt}.",
    "less_than_equal": "{path} must be at most {le}.",
    "less_than": "{path} must be less than {lt}.",
    "string_too_long": "{path} must be at most {max_length} characters.",
    "string_too_short": "{path} must be at least {min_length} characters.",
    "too_long": "{path} must have at most {max_length} items.",
    "too_short": "{path} must have at least {min_length} items.",
    **{kind: f"{{path}} must be {name}." for kind, name in _TYPE_NAMES.items()},
}


class BlandValidationError(Exception):
    """A request Bland would refuse with 400 "Invalid parameters"; `errors` lists why."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{INVALID_PARAMETERS}: {'; '.join(errors)}")
        self.errors = errors
        self.message = INVALID_PARAMETERS


def error_body(errors: list[str]) -> dict[str, Any]:
    """Bland's 400 body for these errors."""
    return {"status": "error", "message": INVALID_PARAMETERS, "errors": list(errors)}


def validate_call(body: object) -> CallRequest:
    """A `POST /v1/calls` body as Bland would accept it; raises BlandValidationError."""
    if not isinstance(body, dict):
        raise BlandValidationError([NOT_AN_OBJECT])
    return validate_model(CallRequest, body)


def validate_call_create(body: object) -> tuple[CallRequest, DialerOptions]:
    """A `call.create` body: the Bland call plus this service's optional `dialer` object."""
    return with_dialer_options(body, validate_call)


def validate_dialer_options(value: object) -> DialerOptions:
    """The `dialer` object (absent means every default)."""
    if value is None:
        return DialerOptions()
    if not isinstance(value, dict):
        raise BlandValidationError(["dialer must be an object."])
    return validate_model(DialerOptions, value, at="dialer")


def with_dialer_options(body: object, validate: Callable[[object], T]) -> tuple[T, DialerOptions]:
    """Validate the body without `dialer` and the `dialer` object; every error at once."""
    if not isinstance(body, dict):
        raise BlandValidationError([NOT_AN_OBJECT])
    errors: list[str] = []
    parsed: T | None = None
    options: DialerOptions | None = None
    try:
        parsed = validate({key: value for key, value in body.items() if key != "dialer"})
    except BlandValidationError as exc:
        errors.extend(exc.errors)
    try:
        options = validate_dialer_options(body.get("dialer"))
    except BlandValidationError as exc:
        errors.extend(exc.errors)
    if parsed is None or options is None:
        raise BlandValidationError(errors)
    return parsed, options


def validate_model(model: type[M], data: object, at: str = "") -> M:
    """`model` from `data`, or BlandValidationError with messages placed under path `at`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BlandValidationError(bland_messages(exc, at)) from None


def bland_messages(exc: ValidationError, at: str = "") -> list[str]:
    """Bland-style messages for a pydantic error; under `at` each starts with its full path."""
    return _unique(_message(error, at) for error in exc.errors())


def _message(error: ErrorDetails, at: str) -> str:
    loc = error["loc"]
    path = _join(at, _path(loc))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "bland":
        text = str(ctx["message"])
        if PATH in text:
            return text.replace(PATH, path)
        return _placed(text, at, path)
    known = MESSAGES.get(_pattern(loc), {})
    for key in (kind, "range" if kind in _RANGE_KINDS else "", "type" if _is_type(kind) else ""):
        if key and key in known:
            text = known[key].format(type=js_type(error["input"]), path=path)
            return _placed(text, at, path)
    return _generic(error, path)


def _generic(error: ErrorDetails, path: str) -> str:
    kind = error["type"]
    loc = error["loc"]
    ctx = dict(error.get("ctx") or {})
    if kind == "extra_forbidden":
        text = f"Additional properties are not allowed ('{loc[-1]}' was unexpected)"
        parent = path[: -len(str(loc[-1]))].rstrip(".") if loc else ""
        return f"{parent}: {text}" if parent else text
    if kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
        return text if text.startswith(path.split(".", maxsplit=1)[0]) else f"{path}: {text}"
    template = _GENERIC.get(kind)
    if template is not None:
        return template.format_map({**ctx, "path": path})
    return f"{path}: {error['msg']}" if path else str(error["msg"])


def _placed(text: str, at: str, path: str) -> str:
    """Bland's own text, prefixed with the path when the error is inside a larger message."""
    return f"{path}: {text}" if at and path else text


def _is_type(kind: str) -> bool:
    return kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "int_from_float")


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


def _pattern(loc: tuple[int | str, ...]) -> str:
    return ".".join("*" if isinstance(item, int) else str(item) for item in loc)


def _join(at: str, path: str) -> str:
    if not at:
        return path
    if not path:
        return at
    return f"{at}{path}" if path.startswith("[") else f"{at}.{path}"


def _unique(messages: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for message in messages:
        seen.setdefault(message, None)
    return list(seen)
