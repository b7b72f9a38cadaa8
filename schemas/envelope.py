"""The request envelope: what AMQP properties and the optional `dialer` object say about a request."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

RequestKind = Literal[
    "call.create", "call.cancel", "batch.create", "batch.cancel", "dnc.add", "dnc.remove"
]
REQUEST_KINDS: tuple[str, ...] = (
    "call.create", "call.cancel", "batch.create", "batch.cancel", "dnc.add", "dnc.remove"
)  # fmt: skip
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class CallingWindow(BaseModel):
    """Local-time window in which the recipient may be called (start inclusive, end exclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: time = Field(time(8, 0), description="Local opening time, HH:MM.")
    end: time = Field(time(21, 0), description="Local closing time, HH:MM.")

    @model_validator(mode="after")
    def _ordered(self) -> CallingWindow:
        if self.end <= self.start:
            raise ValueError("dialer.calling_window.end must be after dialer.calling_window.start")
        return self


class DialerOptions(BaseModel):
    """This service's own options; removed from the body before it goes to Bland."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    not_before: AwareDatetime | None = Field(None, description="Do not dial before this instant.")
    expires_at: AwareDatetime | None = Field(
        None, description="Give up (call.expired) if not dialed by then."
    )
    priority: int = Field(5, ge=0, le=9, description="Higher is dialed first among due requests.")
    calling_window: CallingWindow | None = Field(
        None, description="Override of the default window."
    )
    recipient_timezone: str | None = Field(
        None, description="IANA zone of the recipient when the number's zone is unknown."
    )
    campaign_id: str | None = Field(
        None,
        max_length=128,
        description="Campaign this call belongs to: campaigns share the limits by weighted fair share.",
    )
    campaign_weight: float = Field(
        1.0, gt=0, le=1000, description="The campaign's weight in the fair share (default 1)."
    )

    @field_validator("recipient_timezone")
    @classmethod
    def _iana_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"dialer.recipient_timezone: unknown IANA time zone {value!r}"
                ) from None
        return value

    @model_validator(mode="after")
    def _expiry_after_start(self) -> DialerOptions:
        if self.not_before and self.expires_at and self.expires_at <= self.not_before:
            raise ValueError("dialer.expires_at must be after dialer.not_before")
        return self


class CancelRequest(BaseModel):
    """Body of `call.cancel` / `batch.cancel`: exactly one of the ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: str | None = Field(None, description="The id of the request to cancel.")
    call_id: str | None = Field(None, description="Bland's call id (call.cancel).")
    batch_id: str | None = Field(None, description="Bland's batch id (batch.cancel).")

    @model_validator(mode="after")
    def _exactly_one(self) -> CancelRequest:
        given = [n for n in ("request_id", "call_id", "batch_id") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("Exactly one of request_id, call_id or batch_id is required.")
        return self


class DncRequest(BaseModel):
    """Body of `dnc.add` / `dnc.remove`: the number (E.164 or US national) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    phone_number: str = Field(description="The number to list or unlist.")
    reason: str | None = Field(None, max_length=255, description="Why (dnc.add), e.g. opt-out.")


class Envelope(BaseModel):
    """What the AMQP properties of a request say: its kind, ids and where replies go."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    request_id: str
    correlation_id: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    redelivered: bool = False
    delivery_count: int = 0
    received_at: datetime | None = None

    @field_validator("request_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not _REQUEST_ID_RE.match(value):
            raise ValueError("message_id must be 1 to 128 printable ASCII characters")
        return value


def is_valid_request_id(value: str) -> bool:
    """True for 1 to 128 printable ASCII characters (what a `message_id` may be)."""
    return bool(_REQUEST_ID_RE.match(value))


def content_request_id(kind: str, body: bytes) -> str:
    """Request id for a message without `message_id`: a hash of kind and canonical body."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return "sha256:" + hashlib.sha256(kind.encode() + b"\n" + canonical).hexdigest()[:40]


def split_dialer_options(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Separate the `dialer` object from the Bland body (the body is not mutated)."""
    rest = {k: v for k, v in body.items() if k != "dialer"}
    return rest, body.get("dialer")
