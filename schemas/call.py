"""`CallRequest`: the body of Bland's `POST /v1/calls`, current and legacy fields (bland-api.md 2)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.phone import PhoneNumberError, normalize_phone

MAX_DURATION_MIN = 720
MAX_KEYWORDS = 20
MAX_CUSTOM_GUARD_RAILS = 5
Language = Literal[
    "babel", "fluent", "en", "babel-en", "en-US", "en-GB", "en-AU", "en-NZ", "en-IN", "es",
    "babel-es", "es-419", "fr", "babel-fr", "fr-CA", "de", "babel-de", "el", "hi", "hi-Latn",
    "hu", "ja", "ko", "ko-KR", "vi", "pt", "pt-BR", "pt-PT", "zh", "zh-CN", "zh-Hans", "zh-TW",
    "zh-Hant", "it", "nl", "pl", "ru", "sv", "sv-SE", "da", "da-DK", "fi", "no", "id", "ms",
    "tr", "uk", "bg", "cs", "ro", "sk", "auto",
]  # fmt: skip
LANGUAGES: tuple[str, ...] = get_args(Language)
VoicemailAction = Literal["hangup", "leave_message", "ignore"]
BackgroundTrack = Literal["office", "cafe", "restaurant", "none"]
WebhookEvent = Literal[
    "queue", "call", "latency", "webhook", "tool", "dynamic_data", "citations", "evals",
    "post_transfer_transcript",
]  # fmt: skip
GuardRailType = Literal[
    "tcpa:ai_disclosure", "tcpa:self_introduction", "tcpa:recording_disclosure", "tcpa:opt_out",
    "custom",
]  # fmt: skip

_START_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?: ?[+-]\d{2}:\d{2})?$")
_KEYWORD_RE = re.compile(r"^[^:]+(?::(?P<boost>[^:]*))?$")
_BOOST_RE = re.compile(r"^-?\d+$")
_DTMF_RE = re.compile(r"^[0-9*#w]+$")


PATH = "{path}"  # in a message: replaced by the full path of the field that failed


def bland_error(message: str) -> PydanticCustomError:
    """A validation error whose text is exactly `message` (Bland's wording)."""
    return PydanticCustomError("bland", "{message}", {"message": message})


def js_type(value: object) -> str:
    """The JavaScript `typeof` of a JSON value, as Bland's messages print it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _phone(field: str) -> BeforeValidator:
    def check(value: object) -> str:
        try:
            return normalize_phone(value, field)
        except PhoneNumberError as exc:
            raise bland_error(exc.message) from exc

    return BeforeValidator(check, json_schema_input_type=str | int)


def _whole_number(value: object) -> object:
    """JSON numbers such as 30.0 are whole; a fraction is refused, other types left to the type check."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise bland_error(f"{PATH} must be a whole number.")
    return value


def _must_be_str(message: str) -> BeforeValidator:
    def check(value: object) -> object:
        if value is not None and not isinstance(value, str):
            raise bland_error(message.format(type=js_type(value)))
        return value

    return BeforeValidator(check)


PhoneNumber = Annotated[str, _phone("phone_number")]
FromNumber = Annotated[str, _phone("from")]
TransferNumber = Annotated[str, _phone("transfer_phone_number")]


NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]
Minutes = Annotated[int, Field(ge=1, le=MAX_DURATION_MIN), BeforeValidator(_whole_number)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


def _bool_text(value: object) -> object:
    """Bland's own examples write these flags as "true"/"false": read those as booleans."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


class PronunciationItem(_Strict):
    """How the agent says one word."""

    word: str
    pronunciation: str
    case_sensitive: Annotated[bool, BeforeValidator(_bool_text)] = False
    spaced: Annotated[bool, BeforeValidator(_bool_text)] = True


class VoicemailSms(_Strict):
    """Text message sent when the call reaches voicemail."""

    to: Annotated[str, _phone("voicemail.sms.to")] | None = None
    from_: Annotated[str, _phone("voicemail.sms.from")] | None = Field(None, alias="from")
    message: str


class Voicemail(_Strict):
    """What to do when the call reaches voicemail."""

    message: Annotated[str | None, _must_be_str("Voicemail message must be a string. type: {type}")] = Field(None, description="Required when action is leave_message.")  # fmt: skip
    action: Annotated[VoicemailAction, _must_be_str("Invalid voicemail action. Must be one of: hangup, leave_message, ignore")] = "hangup"  # fmt: skip
    sms: VoicemailSms | None = None
    sensitive: bool = Field(False, description="LLM-based voicemail detection.")

    @model_validator(mode="after")
    def _message_to_leave(self) -> Voicemail:
        if self.action == "leave_message" and not self.message:
            raise bland_error(
                "voicemail.message is required when voicemail.action is leave_message."
            )
        return self


class Retry(_Strict):
    """Call again when the call reaches voicemail."""

    wait: NonNegativeInt | None = Field(None, description="Seconds before the retry.")
    voicemail_action: VoicemailAction | None = None
    voicemail_message: str | None = None


class DialingStrategy(_Strict):
    """Which numbers the call is placed from."""

    type: Literal["local", "custom_pooling"]
    pool_id: str | None = Field(None, description="Required for custom_pooling (enterprise).")

    @model_validator(mode="after")
    def _pool(self) -> DialingStrategy:
        if self.type == "custom_pooling" and not self.pool_id:
            raise bland_error("dialing_strategy.pool_id is required for custom_pooling.")
        return self


class PostCallEvals(_Strict):
    """Workbench evaluation run after the call (needs the recording)."""

    workbench_setup_id: str | None = None
    workbench_setup_version_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PostCallEvals:
        if (self.workbench_setup_id is None) == (self.workbench_setup_version_id is None):
            raise bland_error(
                "post_call_evals needs exactly one of workbench_setup_id or workbench_setup_version_id."
            )
        return self


class DynamicData(_Open):
    """An HTTP request made for the call; its response feeds prompt variables."""

    url: str
    method: str | None = None
    cache: bool | None = None


class GuardRailConfig(_Open):
    """Settings of one guard rail."""

    end_seconds: NonNegativeInt | None = None
    phone_number: Annotated[str, _phone("guard_rails config.phone_number")] | None = None
    node_id: str | None = None


class GuardRail(_Open):
    """A compliance check run during the call."""

    type: GuardRailType
    action: Literal["end_call", "transfer", "move_to_node"] | None = None
    prompt: str | None = None
    config: GuardRailConfig | None = None

    @model_validator(mode="after")
    def _needs(self) -> GuardRail:
        config = self.config or GuardRailConfig()
        if self.action == "transfer" and config.phone_number is None:
            raise bland_error("guard_rails: a transfer action needs config.phone_number.")
        if self.action == "move_to_node" and config.node_id is None:
            raise bland_error("guard_rails: a move_to_node action needs config.node_id.")
        if self.type == "custom" and not self.prompt:
            raise bland_error("guard_rails: a custom guard rail needs a prompt.")
        return self


def _field(description: str, bland_default: Any = None, **kwargs: Any) -> Any:
    """A field unset by default (only what the publisher set goes to Bland)."""
    extra = {"x-bland-default": bland_default} if bland_default is not None else None
    return Field(None, description=description, json_schema_extra=extra, **kwargs)


def _keywords(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, list):
        raise bland_error("Keywords must be an array of strings.")
    if len(value) > MAX_KEYWORDS:
        raise bland_error("At most 20 keywords can be added.")
    for keyword in value:
        if not isinstance(keyword, str):
            raise bland_error("Keywords must be strings.")
        if len(keyword) >= 100:
            raise bland_error(f"Keywords each must be less than 100 characters: {keyword}")
        match = _KEYWORD_RE.match(keyword)
        if match is None:
            raise bland_error("Keywords must be in the format 'string' or 'string:number'.")
        boost = match.group("boost")
        if boost is not None and not _BOOST_RE.match(boost):
            raise bland_error(
                "Keyword boosts with a colon must have a valid integer for the boost rate."
            )
    return value


def _transfer_list(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, dict):
        raise bland_error("Transfer list must be an object.")
    normalized: dict[str, str] = {}
    for label, number in value.items():
        try:
            normalized[label] = normalize_phone(number, "transfer_list")
        except PhoneNumberError as exc:
            raise bland_error(exc.message) from exc
    return normalized


def _tools(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, list):
        raise bland_error("Tools must be an array")
    for index, tool in enumerate(value):
        if not isinstance(tool, str | dict):
            raise bland_error(f"Invalid tools: tools[{index}] must be a tool id or a tool object.")
    return value


def _pathway_version(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or value in ("production", "staging"):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise bland_error(
        "pathway_version needs to either be a number, or a string of 'production' or 'staging'."
    )


def _dynamic_data(value: object) -> object:
    if value == "":
        return None  # Bland's way to clear it; a new call has nothing to clear
    if value is not None and not isinstance(value, list):
        raise bland_error("Dynamic data must be an array")
    return value


# Legacy field -> where its value now lives.
LEGACY_CURRENT: dict[str, str] = {
    "voicemail_message": "voicemail.message",
    "voicemail_action": "voicemail.action",
    "voicemail_sms": "voicemail.sms",
    "sensitive_voicemail_detection": "voicemail.sensitive",
    "available_tags": "dispositions",
    "local_dialing": "dialing_strategy",
}
_VOICEMAIL_LEGACY: dict[str, tuple[str, type]] = {
    "voicemail_message": ("message", str),
    "voicemail_action": ("action", str),
    "voicemail_sms": ("sms", dict),
    "sensitive_voicemail_detection": ("sensitive", bool),
}


def move_legacy_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Move well-typed legacy fields into their current form unless that would change a value."""
    data = dict(data)
    voicemail = data.get("voicemail")
    if voicemail is None or isinstance(voicemail, dict):
        merged = dict(voicemail or {})
        for old, (new, kind) in _VOICEMAIL_LEGACY.items():
            value = data.get(old)
            if isinstance(value, kind) and merged.get(new, value) == value:
                merged[new] = data.pop(old)
        if merged or voicemail is not None:
            data["voicemail"] = merged
    tags = data.get("available_tags")
    if isinstance(tags, list) and data.get("dispositions", tags) == tags:
        data["dispositions"] = data.pop("available_tags")
    local = data.get("local_dialing")
    if local is False:
        del data["local_dialing"]
    elif local is True and data.get("dialing_strategy", {"type": "local"}) == {"type": "local"}:
        data["dialing_strategy"] = {"type": "local"}
        del data["local_dialing"]
    return data


def parse_start_time(value: str) -> datetime | None:
    """`start_time` as an aware datetime (UTC when no offset), None when not Bland's format."""
    if not _START_TIME_RE.match(value):
        return None
    text = value if len(value) > 19 else value + " +00:00"
    text = text[:19] + " " + text[19:].strip()
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None


def valid_https_url(value: str) -> bool:
    """An https URL with a host and no whitespace."""
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.hostname) and not re.search(r"\s", value)


Bool = bool | None
Str = str | None


class CallFields(BaseModel):
    """Every field of a Bland call body, none required (the shared part of calls and batches)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, title="CallFields")
    _require_task: ClassVar[bool] = False

    phone_number: PhoneNumber | None = _field(
        "The number to call; normalised to E.164 (US if no '+')."
    )
    pathway_id: Str = _field("Conversational pathway (UUID) to run instead of a task.")
    task: Annotated[Str, _must_be_str("Task must be a string.")] = Field(None, validate_default=True, description="The agent's prompt; required unless pathway_id. {{var}} from request_data.")  # fmt: skip
    pathway_version: Annotated[int | Literal["production", "staging"] | None, BeforeValidator(_pathway_version)] = _field("Pathway version: a number, 'production' or 'staging'.", "production")  # fmt: skip
    start_node_id: Str = _field("Pathway node to start at (with pathway_id).")
    persona_id: Str = _field("Preset configuration; request fields override it.")
    first_sentence: Annotated[Str, _must_be_str("First sentence must be a string. type: {type}")] = _field("The agent's first line.")  # fmt: skip
    voice: Str = _field("Voice name or id.")
    model: Literal["base", "turbo", "enhanced"] | None = _field("base or turbo (enhanced: legacy).", "base")  # fmt: skip
    language: Annotated[Language | None, _must_be_str("Invalid language code")] = _field("Language code.", "babel-en")  # fmt: skip
    wait_for_greeting: Bool = _field("Wait for the callee to speak first.", False)
    pronunciation_guide: list[PronunciationItem] | None = _field("Words and how to say them.")
    temperature: float | None = _field("Model temperature, 0 to 1.", 0.7, ge=0, le=1)
    interruption_threshold: float | None = _field("Milliseconds of silence before replying.", 500, ge=0)  # fmt: skip
    interruptibility: int | None = _field("0 block, 1 difficult, 2 balanced, 3 easy.", 2, ge=0, le=3)  # fmt: skip
    from_: FromNumber | None = _field("Caller number you own (E.164).", alias="from")
    dialing_strategy: DialingStrategy | None = _field("{type: local} or {type: custom_pooling, pool_id}.")  # fmt: skip
    timezone: Str = _field("IANA time zone of the call.", "America/Los_Angeles")
    start_time: Str = _field("Schedule: 'YYYY-MM-DD HH:MM:SS' with optional ' -HH:MM' offset (UTC if none).")  # fmt: skip
    transfer_phone_number: TransferNumber | None = _field("Number to transfer to (ignored for pathways).")  # fmt: skip
    transfer_list: Annotated[dict[str, str] | None, BeforeValidator(_transfer_list)] = _field("Label to number; 'default' overrides transfer_phone_number.")  # fmt: skip
    max_duration: Minutes | None = _field("Longest call, minutes (1 to 720).", 30)  # fmt: skip
    tools: Annotated[list[str | dict[str, Any]] | None, BeforeValidator(_tools)] = _field("Tool and knowledge-base ids (TL-..., KB-...).")  # fmt: skip
    background_track: Annotated[BackgroundTrack | None, _must_be_str("background_track must be a string.")] = _field("office, cafe, restaurant or none; null = phone static.")  # fmt: skip
    noise_cancellation: Bool = _field("Filter background noise.", False)
    block_interruptions: Bool = _field("Ignore the callee while speaking.", False)
    record: Bool = _field("Record the call (recording_url after the call).", False)
    voicemail: Voicemail | None = _field("Voicemail handling: message, action, sms, sensitive.")
    citation_schema_ids: list[str] | None = _field("Citation schemas (enterprise).")
    stream_post_transfer_transcript: Bool = _field("Stream the transcript after a transfer.", False)
    post_call_evals: PostCallEvals | None = _field("Workbench evaluation; needs record not false.")
    summary_prompt: Str = _field("Prompt for the post-call summary (< 2000 characters).", max_length=1999)  # fmt: skip
    retry: Retry | None = _field("Retry when voicemail is reached.")
    dispositions: list[str] | None = _field("Tags one of which is chosen after the call.")
    request_data: dict[str, Any] | None = _field("Variables for the prompt, pathway and tools.")
    metadata: dict[str, Any] | None = _field("Echoed back with the call and its webhook.")
    webhook: Str = _field("https:// URL that receives the post-call payload.")
    webhook_events: list[WebhookEvent] | None = _field("Live events also sent to the webhook.")
    dynamic_data: Annotated[list[DynamicData] | None, BeforeValidator(_dynamic_data)] = _field("HTTP requests feeding variables.")  # fmt: skip
    keywords: Annotated[list[str] | None, BeforeValidator(_keywords)] = _field("Transcription boosts: 'word' or 'word:N', at most 20.")  # fmt: skip
    ignore_button_press: Bool = _field("Ignore DTMF input.", False)
    precall_dtmf_sequence: Str = _field("Digits dialed on connect: 0-9 * # w (w = 0.5 s pause).")
    guard_rails: list[GuardRail] | None = _field("Compliance checks during the call.")
    # Legacy fields (bland-api.md 2.2). The first six are moved into their current form
    # before validation; still present afterwards means they conflict with it.
    voicemail_message: Annotated[Str, _must_be_str("Voicemail message must be a string. type: {type}")] = Field(None, exclude=True, description="Legacy: voicemail.message.")  # fmt: skip
    voicemail_action: Annotated[VoicemailAction | None, _must_be_str("Invalid voicemail_action. Options are: hangup, leave_message, ignore.")] = Field(None, exclude=True, description="Legacy: voicemail.action.")  # fmt: skip
    voicemail_sms: VoicemailSms | None = Field(None, exclude=True, description="Legacy: voicemail.sms.")  # fmt: skip
    sensitive_voicemail_detection: Bool = Field(None, exclude=True, description="Legacy: voicemail.sensitive.")  # fmt: skip
    available_tags: list[str] | None = Field(None, exclude=True, description="Legacy: dispositions.")  # fmt: skip
    local_dialing: Bool = Field(None, exclude=True, description="Legacy: dialing_strategy {type: local}.")  # fmt: skip
    answered_by_enabled: Bool = _field("Legacy; answered_by is now always computed.")
    analysis_prompt: Str = _field("Legacy (deprecated): post-call analysis prompt.")
    analysis_schema: dict[str, Any] | None = _field("Legacy (deprecated): analysis key to type.")
    analysis_preset: Str = _field("Legacy.")
    geospatial_dialing: Bool = _field("Legacy.")
    dispatch_hours: dict[str, Any] | None = _field("Legacy.")
    amd: Bool = _field("Legacy: answering machine detection.")
    ivr_mode: Bool = _field("Legacy.")
    reduce_latency: Bool = _field("Legacy.")
    voice_id: int | None = _field("Legacy numeric voice id.")
    calendly: dict[str, Any] | None = _field("Legacy.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_to_current(cls, data: Any) -> Any:
        return move_legacy_fields(data) if isinstance(data, dict) else data

    @field_validator("pathway_id")
    @classmethod
    def _uuid(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                UUID(value)
            except ValueError:
                raise bland_error(f"{info.field_name} must be a valid UUID.") from None
        return value

    @field_validator("task")
    @classmethod
    def _task_or_pathway(cls, value: str | None, info: ValidationInfo) -> str | None:
        pathway_known = "pathway_id" in info.data  # absent when pathway_id itself was invalid
        if cls._require_task and value is None and pathway_known and not info.data["pathway_id"]:
            raise bland_error("Missing required parameter: task.")
        return value

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise bland_error(f"Invalid timezone: {exc}") from None
        return value

    @field_validator("start_time")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is not None and parse_start_time(value) is None:
            raise bland_error("Start time must be a valid date-time format")
        return value

    @field_validator("webhook")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith("https://"):
                raise bland_error("webhook must be a string that starts with https://.")
            if not valid_https_url(value):
                raise bland_error("Webhook must be a valid URI")
        return value

    @field_validator("precall_dtmf_sequence")
    @classmethod
    def _dtmf(cls, value: str | None) -> str | None:
        if value is not None and not _DTMF_RE.match(value):
            raise bland_error("Precall DTMF sequence must be a valid DTMF sequence")
        return value

    @field_validator("transfer_phone_number")
    @classmethod
    def _not_self(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("phone_number"):
            raise bland_error("Transfer phone number cannot be the same as the phone number.")
        return value

    @field_validator("post_call_evals")
    @classmethod
    def _recorded(cls, value: PostCallEvals | None, info: ValidationInfo) -> PostCallEvals | None:
        if value is not None and info.data.get("record") is False:
            raise bland_error("post_call_evals requires the call to be recorded (record cannot be false).")  # fmt: skip
        return value

    @field_validator("guard_rails")
    @classmethod
    def _custom_count(cls, value: list[GuardRail] | None) -> list[GuardRail] | None:
        if value and sum(rail.type == "custom" for rail in value) > MAX_CUSTOM_GUARD_RAILS:
            raise bland_error("guard_rails: at most 5 custom guard rails.")
        return value

    @field_validator(*LEGACY_CURRENT)
    @classmethod
    def _no_conflict(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            current = LEGACY_CURRENT[str(info.field_name)]
            raise bland_error(f"{info.field_name} conflicts with {current}; send only {current}.")
        return value


class CallRequest(CallFields):
    """The body of `POST /v1/calls`: `phone_number` always, `task` unless `pathway_id`."""

    model_config = ConfigDict(title="CallRequest")
    _require_task: ClassVar[bool] = True

    phone_number: PhoneNumber = Field(description="The number to call; normalised to E.164 (US if no '+').")  # fmt: skip


def to_bland_body(model: CallFields) -> dict[str, Any]:
    """The JSON body to POST: current names, by alias, only the fields that were set."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
