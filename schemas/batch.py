"""Batch bodies: the legacy `/v1/batches` shape and Bland's v2 shape; one CallRequest per recipient."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from schemas.call import (
    CallFields,
    CallRequest,
    PhoneNumber,
    bland_error,
    to_bland_body,
    valid_https_url,
)
from schemas.envelope import DialerOptions
from schemas.phone import PhoneNumberError, normalize_phone
from schemas.validation import (
    NOT_AN_OBJECT,
    BlandValidationError,
    validate_model,
    with_dialer_options,
)

DESCRIPTION_MAX = 60
DEFAULT_DESCRIPTION = "Untitled Batch"
NOT_A_BATCH = NOT_AN_OBJECT  # Bland words it so for every body
UNKNOWN_SHAPE = (
    "Batch parameters must have either global and call_objects (v2) "
    "or base_prompt and call_data (legacy)."
)
M = TypeVar("M", bound=BaseModel)
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_LEGACY_KEYS = frozenset({"base_prompt", "call_data"})
_V2_KEYS = frozenset({"global", "call_objects"})


def _recipients(value: object) -> object:
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    raise bland_error("call_data must be an array of objects.")


class LegacyBatchRequest(CallFields):
    """The seed tutorial's batch: one prompt with {{placeholders}}, one entry per recipient."""

    model_config = ConfigDict(title="LegacyBatchRequest")

    base_prompt: str = Field(description="The task; {{key}} is replaced by each entry's key.")
    call_data: Annotated[list[dict[str, Any]], BeforeValidator(_recipients)] = Field(
        description="One object per recipient: phone_number and the placeholder values."
    )
    label: str | None = Field(None, description="Name of the batch.")
    campaign_id: str | None = Field(None, description="Groups batches.")
    test_mode: bool | None = Field(None, description="Only the first entry is called.")
    batch_webhook: str | None = Field(None, description="https URL told when the batch ends.")
    batch_id: str | None = Field(None, description="Caller-chosen batch id (tutorial).")

    @field_validator("phone_number", "task", mode="before")
    @classmethod
    def _per_recipient(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            where = "call_data entries" if info.field_name == "phone_number" else "base_prompt"
            raise bland_error(f"{info.field_name} is not allowed here; use {where}.")
        return value

    @field_validator("batch_webhook")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not valid_https_url(value):
            raise bland_error("batch_webhook must be a valid https URL.")
        return value


class BatchGlobal(CallFields):
    """The v2 `global` object: defaults for every call; task or pathway_id, no phone_number."""

    model_config = ConfigDict(title="BatchGlobal")
    _require_task: ClassVar[bool] = True

    @field_validator("phone_number", mode="before")
    @classmethod
    def _no_phone(cls, value: object) -> object:
        if value is not None:
            raise bland_error("phone_number is not allowed in global; put it in each call object.")
        return value


class _CallObjectFields(CallFields):
    """A v2 call object whose phone_number may be missing (reported as Bland does)."""

    b_cid: str | None = Field(None, description="Caller-chosen call id, UUID v7 (entitlement).")

    @field_validator("b_cid")
    @classmethod
    def _uuid7(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                version = UUID(value).version
            except ValueError:
                version = None
            if version != 7:
                raise bland_error("b_cid must be a UUID v7.")
        return value


class CallObject(_CallObjectFields):
    """One v2 `call_objects` entry: a /v1/calls body with phone_number; overrides global."""

    model_config = ConfigDict(title="CallObject")

    phone_number: PhoneNumber = Field(description="The number to call; normalised to E.164.")


class _BatchShell(BaseModel):
    """The v2 body's own fields (global and call_objects are checked one by one)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    description: str = Field(
        DEFAULT_DESCRIPTION, max_length=DESCRIPTION_MAX, description="At most 60 characters."
    )
    status_webhook: str | None = Field(None, description="https URL told of each batch phase.")

    @field_validator("status_webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not valid_https_url(value):
            raise bland_error("status_webhook must be a valid https URL.")
        return value


class BatchV2Request(_BatchShell):
    """Bland's `POST /v2/batches/create` body."""

    model_config = ConfigDict(title="BatchV2Request")

    global_: BatchGlobal = Field(alias="global", description="Defaults shared by every call.")
    call_objects: list[CallObject] = Field(
        min_length=1, description="One /v1/calls body per recipient (phone_number required)."
    )


def validate_batch(body: object) -> LegacyBatchRequest | BatchV2Request:
    """Either batch shape, every recipient validated on its own; raises BlandValidationError."""
    if not isinstance(body, dict):
        raise BlandValidationError([NOT_A_BATCH])
    keys = set(body)
    if keys & _V2_KEYS and not keys & _LEGACY_KEYS:
        return _validate_v2(body)
    if keys & _LEGACY_KEYS and not keys & _V2_KEYS:
        return _validate_legacy(body)
    raise BlandValidationError([UNKNOWN_SHAPE])


def validate_batch_create(
    body: object,
) -> tuple[LegacyBatchRequest | BatchV2Request, DialerOptions]:
    """A `batch.create` body: either batch shape plus the optional `dialer` object."""
    return with_dialer_options(body, validate_batch)


def expand_batch(batch: LegacyBatchRequest | BatchV2Request) -> list[CallRequest]:
    """The calls a valid batch places, in order (legacy test_mode: the first only)."""
    return [CallRequest.model_validate(body) for body in recipient_bodies(batch)]


def recipient_bodies(batch: LegacyBatchRequest | BatchV2Request) -> list[dict[str, Any]]:
    """Each recipient's /v1/calls body, not yet validated as a call."""
    if isinstance(batch, BatchV2Request):
        shared = to_bland_body(batch.global_)
        return [{**shared, **_without_b_cid(to_bland_body(item))} for item in batch.call_objects]
    shared = {k: v for k, v in to_bland_body(batch).items() if k not in _LEGACY_ONLY}
    entries = batch.call_data[:1] if batch.test_mode else batch.call_data
    return [_legacy_call(shared, batch.base_prompt, entry) for entry in entries]


def fill_placeholders(template: str, values: dict[str, Any]) -> str:
    """Replace each {{key}} with its value; unknown placeholders stay for Bland to fill."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            return match.group(0)
        value = values[key]
        if isinstance(value, str):
            return value
        return "" if value is None else json.dumps(value, ensure_ascii=False)  # as JSON prints it

    return _PLACEHOLDER_RE.sub(replace, template)


_LEGACY_ONLY = frozenset(set(LegacyBatchRequest.model_fields) - set(CallFields.model_fields))


def _legacy_call(shared: dict[str, Any], prompt: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        **shared,
        "phone_number": entry.get("phone_number"),
        "task": fill_placeholders(prompt, entry),
    }


def _without_b_cid(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "b_cid"}


def _validate_legacy(body: dict[str, Any]) -> LegacyBatchRequest:
    errors: list[str] = []
    batch = _validated(LegacyBatchRequest, body, "", errors)
    shared = None
    if batch is not None:
        shared = {k: v for k, v in to_bland_body(batch).items() if k not in _LEGACY_ONLY}
    entries = body.get("call_data")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        at = f"call_data[{index}]"
        if not isinstance(entry, dict):
            continue  # reported as the shape of call_data
        if entry.get("phone_number") in (None, ""):
            errors.append(f"{at}.phone_number: Entry #{index + 1} did not have a phone number.")
        elif shared is not None:
            errors.extend(_call_errors(_legacy_call(shared, body["base_prompt"], entry), at))
        else:
            errors.extend(_phone_errors(entry["phone_number"], at))
    if errors or batch is None:
        raise BlandValidationError(list(dict.fromkeys(errors)))
    return batch


def _phone_errors(value: object, at: str) -> list[str]:
    try:
        normalize_phone(value)
    except PhoneNumberError as exc:
        return [f"{at}.phone_number: {exc.message}"]
    return []


def _validate_v2(body: dict[str, Any]) -> BatchV2Request:
    errors: list[str] = []
    shell = {key: value for key, value in body.items() if key not in _V2_KEYS}
    errors.extend(_errors_of(_BatchShell, shell))
    shared = _validated(BatchGlobal, body.get("global"), "global", errors)
    items = body.get("call_objects")
    if items is None:
        errors.append("Missing required parameter: call_objects.")
    elif not isinstance(items, list) or not items:
        errors.append("call_objects must be a non-empty array of objects.")
    else:
        for index, item in enumerate(items):
            errors.extend(_item_errors(index, item, shared))
    _raise_if(errors)
    return validate_model(BatchV2Request, body)


def _item_errors(index: int, item: object, shared: BatchGlobal | None) -> list[str]:
    at = f"call_objects[{index}]"
    if not isinstance(item, dict):
        return [f"{at} must be an object."]
    errors: list[str] = []
    if item.get("phone_number") in (None, ""):
        errors.append(f"{at}.phone_number: Entry #{index + 1} did not have a phone number.")
        item = {**item, "phone_number": None}
        model: type[_CallObjectFields] = _CallObjectFields
    else:
        model = CallObject
    parsed = _validated(model, item, at, errors)
    if parsed is not None and shared is not None and not errors:
        merged = {**to_bland_body(shared), **_without_b_cid(to_bland_body(parsed))}
        errors.extend(_call_errors(merged, at))
    return errors


def _validated(model: type[M], data: object, at: str, errors: list[str]) -> M | None:
    if data is None:
        errors.append(f"Missing required parameter: {at}.")
        return None
    if not isinstance(data, dict):
        errors.append(f"{at} must be an object.")
        return None
    try:
        return validate_model(model, data, at=at)
    except BlandValidationError as exc:
        errors.extend(exc.errors)
        return None


def _call_errors(body: dict[str, Any], at: str) -> list[str]:
    try:
        validate_model(CallRequest, body, at=at)
    except BlandValidationError as exc:
        return exc.errors
    return []


def _errors_of(model: type[BaseModel], data: dict[str, Any]) -> list[str]:
    try:
        validate_model(model, data)
    except BlandValidationError as exc:
        return exc.errors
    return []


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise BlandValidationError(list(dict.fromkeys(errors)))
