"""A `batch.create` split into recipients: each validated alone, placeholders filled as Bland does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from schemas.batch import (
    _LEGACY_ONLY,
    BatchGlobal,
    LegacyBatchRequest,
    _BatchShell,
    _item_errors,
    _legacy_call,
    _validated,
    _without_b_cid,
)
from schemas.call import CallRequest, to_bland_body
from schemas.envelope import DialerOptions
from schemas.phone import PhoneNumberError, normalize_phone
from schemas.validation import NOT_AN_OBJECT, BlandValidationError, validate_model

Shape = Literal["legacy", "v2"]
Dispatch = Literal["expand", "bland"]
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_LEGACY_KEYS = frozenset({"base_prompt", "call_data"})
_V2_KEYS = frozenset({"global", "call_objects"})
UNKNOWN_SHAPE = (
    "Batch parameters must have either global and call_objects (v2) "
    "or base_prompt and call_data (legacy)."
)


class BatchOptions(DialerOptions):
    """The `dialer` object of a `batch.create`: every call option, plus the batch's own."""

    all_or_nothing: bool = Field(
        False, description="Reject the whole batch when any recipient is invalid."
    )
    dispatch: Dispatch | None = Field(
        None, description="expand (one POST /v1/calls per recipient) or bland (Bland's batches)."
    )

    def call_options(self) -> DialerOptions:
        """The options each recipient's call carries."""
        return DialerOptions.model_validate(
            self.model_dump(exclude={"all_or_nothing", "dispatch"}, exclude_defaults=True)
        )


@dataclass(frozen=True)
class Recipient:
    """One recipient: its /v1/calls body when valid, else why not (each error names the field)."""

    index: int
    phone_number: str | None  # E.164 when it could be read
    call: CallRequest | None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SplitBatch:
    """A batch request whose shared fields are valid; its recipients, valid or not."""

    shape: Shape
    recipients: list[Recipient]
    options: BatchOptions
    label: str | None = None
    test_mode: bool = False

    @property
    def rejected(self) -> list[Recipient]:
        """The recipients that will not be dialed."""
        return [r for r in self.recipients if r.call is None]


def split_batch(body: object) -> SplitBatch:
    """Split a `batch.create` body; BlandValidationError when the batch as a whole is invalid."""
    if not isinstance(body, dict):
        raise BlandValidationError([NOT_AN_OBJECT])
    errors: list[str] = []
    options = _validated(BatchOptions, body.get("dialer") or {}, "dialer", errors)
    rest = {k: v for k, v in body.items() if k != "dialer"}
    keys = set(rest)
    if keys & _V2_KEYS and not keys & _LEGACY_KEYS:
        split = _split_v2(rest, errors)
    elif keys & _LEGACY_KEYS and not keys & _V2_KEYS:
        split = _split_legacy(rest, errors)
    else:
        raise BlandValidationError([UNKNOWN_SHAPE, *errors])
    if errors or options is None or split is None:
        raise BlandValidationError(list(dict.fromkeys(errors)))
    shape, recipients, label, test_mode = split
    batch = SplitBatch(shape, recipients, options, label, test_mode)
    if options.all_or_nothing and batch.rejected:
        raise BlandValidationError([e for r in batch.rejected for e in r.errors])
    return batch


def missing_placeholders(template: str, values: dict[str, Any]) -> list[str]:
    """The {{keys}} of the template that `values` does not fill (case-sensitive), in order."""
    keys = (match.group(1) for match in _PLACEHOLDER_RE.finditer(template))
    return list(dict.fromkeys(key for key in keys if key not in values))


_Split = tuple[Shape, list[Recipient], str | None, bool]


def _split_legacy(body: dict[str, Any], errors: list[str]) -> _Split | None:
    entries = body.get("call_data")
    if isinstance(entries, list) and not entries:
        errors.append("call_data must have at least one entry.")
    batch = _validated(LegacyBatchRequest, body, "", errors)
    if batch is None:
        return None
    shared = {k: v for k, v in to_bland_body(batch).items() if k not in _LEGACY_ONLY}
    request_data = shared.get("request_data") or {}
    entries_now = batch.call_data[:1] if batch.test_mode else batch.call_data
    recipients = [
        _legacy_recipient(index, entry, shared, batch.base_prompt, request_data)
        for index, entry in enumerate(entries_now)
    ]
    return "legacy", recipients, batch.label, bool(batch.test_mode)


def _legacy_recipient(
    index: int,
    entry: dict[str, Any],
    shared: dict[str, Any],
    prompt: str,
    request_data: dict[str, Any],
) -> Recipient:
    at = f"call_data[{index}]"
    phone = _phone(entry.get("phone_number"))
    if entry.get("phone_number") in (None, ""):
        return Recipient(index, None, None, [f"{at}.phone_number: Entry #{index + 1} did not have a phone number."])  # fmt: skip
    # A key Bland would fill from request_data at call time is not missing.
    missing = missing_placeholders(prompt, {**request_data, **entry})
    if missing:
        names = ", ".join(f"{{{{{key}}}}}" for key in missing)
        return Recipient(index, phone, None, [f"{at}: no value for placeholder {names} in base_prompt."])  # fmt: skip
    return _recipient(index, phone, _legacy_call(shared, prompt, entry), at)


def _split_v2(body: dict[str, Any], errors: list[str]) -> _Split | None:
    shell = {key: value for key, value in body.items() if key not in _V2_KEYS}
    parsed_shell = _validated(_BatchShell, shell, "", errors) if shell else _BatchShell()
    shared = _validated(BatchGlobal, body.get("global"), "global", errors)
    items = body.get("call_objects")
    if items is None:
        errors.append("Missing required parameter: call_objects.")
        return None
    if not isinstance(items, list) or not items:
        errors.append("call_objects must be a non-empty array of objects.")
        return None
    if shared is None or parsed_shell is None:
        return None
    shared_body = to_bland_body(shared)
    recipients = [
        _v2_recipient(index, item, shared, shared_body) for index, item in enumerate(items)
    ]
    return "v2", recipients, parsed_shell.description, False


def _v2_recipient(
    index: int, item: object, shared: BatchGlobal, shared_body: dict[str, Any]
) -> Recipient:
    at = f"call_objects[{index}]"
    problems = _item_errors(index, item, shared)
    phone = _phone(item.get("phone_number")) if isinstance(item, dict) else None
    if problems or not isinstance(item, dict):
        return Recipient(index, phone, None, problems or [f"{at} must be an object."])
    return _recipient(index, phone, {**shared_body, **_without_b_cid(item)}, at)


def _recipient(index: int, phone: str | None, body: dict[str, Any], at: str) -> Recipient:
    try:
        call = validate_model(CallRequest, body, at=at)
    except BlandValidationError as exc:
        return Recipient(index, phone, None, list(exc.errors))
    return Recipient(index, call.phone_number, call)


def _phone(value: object) -> str | None:
    try:
        return normalize_phone(value)
    except PhoneNumberError:
        return None
