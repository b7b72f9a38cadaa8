"""CallRequest and validate_call: every rule of bland-api.md 2.1/2.2, answered in Bland's words."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.call import CallRequest, parse_start_time, to_bland_body
from schemas.envelope import DialerOptions
from schemas.validation import (
    BlandValidationError,
    error_body,
    validate_call,
    validate_call_create,
)

BASE: dict[str, Any] = {"phone_number": "+12223334444", "task": "Remind them of the meeting."}
PHONE = "Invalid phone number. Please include a country code if outside the US."


def errors_of(body: object) -> list[str]:
    with pytest.raises(BlandValidationError) as caught:
        validate_call(body)
    assert caught.value.message == "Invalid parameters"
    return caught.value.errors


def load_example(name: str) -> Any:
    return json.loads(resources.files("schemas").joinpath("examples", name).read_text())


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"task": 5}, "Task must be a string."),
    ({"phone_number": "12223334444"}, PHONE),
    ({"phone_number": True}, "Phone number must be a string or number."),
    ({"from": "12223334444"}, "Invalid from number format"),
    ({"from": 5}, "Invalid from number format"),
    ({"transfer_phone_number": "nope"}, "Invalid transfer phone number format"),
    (
        {"transfer_phone_number": "(222) 333-4444"},
        "Transfer phone number cannot be the same as the phone number.",
    ),
    ({"transfer_list": ["+12223334445"]}, "Transfer list must be an object."),
    ({"transfer_list": {"sales": "555"}}, "Invalid phone number format in transfer list"),
    ({"start_time": "2026-01-01T12:00:00Z"}, "Start time must be a valid date-time format"),
    ({"start_time": "2026-13-01 12:00:00"}, "Start time must be a valid date-time format"),
    ({"start_time": "2026-01-01 12:00:00 -5:00"}, "Start time must be a valid date-time format"),
    ({"start_time": 1767268800}, "start_time must be a string."),
    ({"max_duration": 0}, "Max duration must be at least 1"),
    ({"max_duration": 721}, "max_duration must be at most 12 hours."),
    ({"max_duration": "30"}, "Max duration must be a number"),
    ({"max_duration": True}, "Max duration must be a number"),
    ({"max_duration": 1.5}, "max_duration must be a whole number."),
    ({"temperature": 1.1}, "Temperature must be between 0 and 1."),
    ({"temperature": -0.1}, "Temperature must be between 0 and 1."),
    ({"temperature": "0.5"}, "Temperature must be a number"),
    ({"interruptibility": 4}, "interruptibility must be 0, 1, 2 or 3."),
    ({"interruptibility": 1.5}, "interruptibility must be an integer."),
    ({"interruption_threshold": "fast"}, "interruption_threshold must be a number."),
    ({"interruption_threshold": -1}, "interruption_threshold must be a positive number."),
    ({"keywords": "Bland"}, "Keywords must be an array of strings."),
    ({"keywords": ["ok", 5]}, "Keywords must be strings."),
    ({"keywords": [f"w{i}" for i in range(21)]}, "At most 20 keywords can be added."),
    ({"keywords": ["x" * 100]}, "Keywords each must be less than 100 characters: " + "x" * 100),
    ({"keywords": ["a:b:c"]}, "Keywords must be in the format 'string' or 'string:number'."),
    ({"keywords": [":3"]}, "Keywords must be in the format 'string' or 'string:number'."),
    (
        {"keywords": ["Bland:high"]},
        "Keyword boosts with a colon must have a valid integer for the boost rate.",
    ),
    (
        {"keywords": ["Bland:"]},
        "Keyword boosts with a colon must have a valid integer for the boost rate.",
    ),
    ({"webhook": "http://example.com/hook"}, "webhook must be a string that starts with https://."),
    ({"webhook": 5}, "webhook must be a string that starts with https://."),
    ({"webhook": "https://"}, "Webhook must be a valid URI"),
    ({"webhook": "https://exa mple.com"}, "Webhook must be a valid URI"),
    ({"record": "yes"}, "Record must be a boolean"),
    ({"wait_for_greeting": 1}, "wait_for_greeting must be a boolean."),
    ({"block_interruptions": "no"}, "block_interruptions must be a boolean."),
    ({"ignore_button_press": 0}, "ignore_button_press must be a boolean."),
    ({"answered_by_enabled": "true"}, "answered_by_enabled must be a boolean."),
    ({"noise_cancellation": None, "metadata": []}, "metadata must be an object."),
    ({"request_data": "x"}, "request_data must be an object."),
    ({"first_sentence": 5}, "First sentence must be a string. type: number"),
    ({"first_sentence": True}, "First sentence must be a string. type: boolean"),
    ({"voice": 3}, "Voice must be a string."),
    ({"language": "klingon"}, "Invalid language code"),
    ({"language": 1}, "Invalid language code"),
    (
        {"timezone": "Mars/Olympus_Mons"},
        "Invalid timezone: 'No time zone found with key Mars/Olympus_Mons'",
    ),
    ({"timezone": 5}, "Timezone must be a string."),
    ({"summary_prompt": "x" * 2000}, "Summary prompt must be less than 2000 characters."),
    ({"summary_prompt": 5}, "Summary prompt must be a string."),
    (
        {"background_track": "jazz"},
        "Invalid background_track option. Options are: office, cafe, restaurant, none.",
    ),
    ({"background_track": 5}, "background_track must be a string."),
    ({"tools": "TL-1"}, "Tools must be an array"),
    ({"tools": [5]}, "Invalid tools: tools[0] must be a tool id or a tool object."),
    ({"dynamic_data": {"url": "https://x"}}, "Dynamic data must be an array"),
    (
        {"dynamic_data": [{"method": "GET"}]},
        "Invalid dynamic data: dynamic_data[0].url is required.",
    ),
    ({"dynamic_data": [5]}, "Invalid dynamic data: dynamic_data[0] must be an object."),
    ({"precall_dtmf_sequence": "12a"}, "Precall DTMF sequence must be a valid DTMF sequence"),
    ({"precall_dtmf_sequence": 12}, "Precall DTMF sequence must be a valid DTMF sequence"),
    (
        {"pathway_version": "beta"},
        "pathway_version needs to either be a number, or a string of 'production' or 'staging'.",
    ),
    (
        {"pathway_version": True},
        "pathway_version needs to either be a number, or a string of 'production' or 'staging'.",
    ),
    ({"pathway_id": "my-pathway"}, "pathway_id must be a valid UUID."),
    ({"pathway_id": 7}, "pathway_id must be a string."),
    ({"model": "enormous"}, "Invalid model option. Options are: base, turbo."),
    ({"pronunciation_guide": {"word": "x"}}, "Invalid pronunciation guide type."),
    ({"pronunciation_guide": ["x"]}, "Invalid pronunciation guide type."),
    (
        {"pronunciation_guide": [{"word": "Bland"}]},
        "Missing required parameter: pronunciation_guide[0].pronunciation.",
    ),
    ({"voicemail": "hang up"}, "voicemail must be an object."),
    (
        {"voicemail": {"action": "scream"}},
        "Invalid voicemail action. Must be one of: hangup, leave_message, ignore",
    ),
    (
        {"voicemail": {"action": "leave_message"}},
        "voicemail.message is required when voicemail.action is leave_message.",
    ),
    ({"voicemail": {"message": 5}}, "Voicemail message must be a string. type: number"),
    ({"voicemail": {"sms": "hi"}}, "voicemail.sms must be an object."),
    (
        {"voicemail": {"sms": {"to": "x", "message": "m"}}},
        "Invalid phone number format in voicemail.sms.to",
    ),
    ({"voicemail": {"sensitive": "yes"}}, "voicemail.sensitive must be a boolean."),
    (
        {"voicemail": {"beep": True}},
        "voicemail: Additional properties are not allowed ('beep' was unexpected)",
    ),
    ({"retry": 3}, "Retry must be an object."),
    ({"retry": {"wait": -1}}, "retry.wait must be at least 0."),
    ({"retry": {"wait": 2.5}}, "retry.wait must be a whole number."),
    (
        {"retry": {"attempts": 2}},
        "retry: Additional properties are not allowed ('attempts' was unexpected)",
    ),
    (
        {"dialing_strategy": {"type": "nearby"}},
        "dialing_strategy.type must be local or custom_pooling.",
    ),
    (
        {"dialing_strategy": {"type": "custom_pooling"}},
        "dialing_strategy.pool_id is required for custom_pooling.",
    ),
    ({"dialing_strategy": "local"}, "dialing_strategy must be an object."),
    (
        {"post_call_evals": {"workbench_setup_id": "w"}, "record": False},
        "post_call_evals requires the call to be recorded (record cannot be false).",
    ),
    (
        {"post_call_evals": {}},
        "post_call_evals needs exactly one of workbench_setup_id or workbench_setup_version_id.",
    ),
    ({"dispositions": "INTERESTED"}, "dispositions must be an array of strings."),
    ({"dispositions": [1]}, "dispositions must be an array of strings."),
    ({"citation_schema_ids": [1]}, "citation_schema_ids must be an array of strings."),
    (
        {"webhook_events": ["queue", "gossip"]},
        "Invalid webhook_events option. Options are: queue, call, latency, webhook, tool, dynamic_data, citations, evals, post_transfer_transcript.",
    ),
    (
        {"guard_rails": [{"type": "tcpa:nap"}]},
        "Invalid guard_rails type. Options are: tcpa:ai_disclosure, tcpa:self_introduction, tcpa:recording_disclosure, tcpa:opt_out, custom.",
    ),
    ({"guard_rails": [{"type": "custom"}]}, "guard_rails: a custom guard rail needs a prompt."),
    (
        {"guard_rails": [{"type": "tcpa:opt_out", "action": "transfer"}]},
        "guard_rails: a transfer action needs config.phone_number.",
    ),
    (
        {"guard_rails": [{"type": "tcpa:opt_out", "action": "move_to_node", "config": {}}]},
        "guard_rails: a move_to_node action needs config.node_id.",
    ),
    (
        {"guard_rails": [{"type": "custom", "prompt": "p"}] * 6},
        "guard_rails: at most 5 custom guard rails.",
    ),
    ({"foo": 1}, "Additional properties are not allowed ('foo' was unexpected)"),
    ({"dialer": {}}, "Additional properties are not allowed ('dialer' was unexpected)"),
    (
        {"voicemail_action": "scream"},
        "Invalid voicemail action. Must be one of: hangup, leave_message, ignore",
    ),
    ({"voicemail_message": 5}, "Voicemail message must be a string. type: number"),
    ({"voicemail_sms": "text"}, "voicemail_sms must be an object. type: string"),
    ({"sensitive_voicemail_detection": "on"}, "sensitive_voicemail_detection must be a boolean."),
    (
        {"voicemail_message": "a", "voicemail": {"message": "b"}},
        "voicemail_message conflicts with voicemail.message; send only voicemail.message.",
    ),
    (
        {"available_tags": ["A"], "dispositions": ["B"]},
        "available_tags conflicts with dispositions; send only dispositions.",
    ),
    (
        {"local_dialing": True, "dialing_strategy": {"type": "custom_pooling", "pool_id": "p"}},
        "local_dialing conflicts with dialing_strategy; send only dialing_strategy.",
    ),
    ({"analysis_schema": ["email"]}, "analysis_schema must be an object."),
]


@pytest.mark.parametrize(("patch", "message"), INVALID)
def test_each_invalid_field_gives_blands_message(patch: dict[str, Any], message: str) -> None:
    assert errors_of({**BASE, **patch}) == [message]


def test_missing_phone_number_and_task_are_both_reported() -> None:
    assert errors_of({}) == [
        "Missing required parameter: phone_number.",
        "Missing required parameter: task.",
    ]


def test_every_error_is_reported_at_once() -> None:
    errors = errors_of(
        {"phone_number": "call me", "task": 5, "record": "y", "max_duration": 0, "foo": 1}
    )
    assert errors == [
        PHONE,
        "Task must be a string.",
        "Max duration must be at least 1",
        "Record must be a boolean",
        "Additional properties are not allowed ('foo' was unexpected)",
    ]


@pytest.mark.parametrize("body", [None, [], "call", 5, True])
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    assert errors_of(body) == ["Call parameters must be an object."]


def test_error_body_is_blands_400_envelope() -> None:
    assert error_body(["Task must be a string."]) == {
        "status": "error",
        "message": "Invalid parameters",
        "errors": ["Task must be a string."],
    }


VALID: list[dict[str, Any]] = [
    {"pathway_id": "3c9a0f5e-8d0b-4b7e-9a51-2f4c6d1e7a90", "task": None},
    {"pathway_version": "staging"},
    {"pathway_version": 3},
    {"max_duration": 1},
    {"max_duration": 720},
    {"temperature": 0},
    {"temperature": 1},
    {"interruptibility": 0},
    {"keywords": [f"w{i}:{i - 10}" for i in range(20)]},
    {"keywords": ["x" * 99, "two words:5"]},
    {"start_time": "2026-01-01 12:00:00"},
    {"start_time": "2026-01-01 12:00:00 +05:30"},
    {"start_time": "2026-01-01 12:00:00-05:00"},
    {"precall_dtmf_sequence": "0123456789*#w"},
    {"background_track": None},
    {"voicemail": {"action": "ignore"}},
    {"post_call_evals": {"workbench_setup_version_id": "v"}},
    {"post_call_evals": {"workbench_setup_id": "w"}, "record": True},
    {"dialing_strategy": {"type": "custom_pooling", "pool_id": "p"}},
    {"tools": ["TL-1", {"name": "lookup", "url": "https://x.example"}]},
    {"summary_prompt": "x" * 1999},
    {"answered_by_enabled": True, "analysis_prompt": "p", "analysis_schema": {"e": "email"}},
]


@pytest.mark.parametrize("patch", VALID)
def test_boundary_values_are_accepted(patch: dict[str, Any]) -> None:
    body = {k: v for k, v in {**BASE, **patch}.items() if v is not None}
    assert to_bland_body(validate_call(body)) == body


def test_numbers_are_sent_in_e164() -> None:
    call = validate_call(
        {
            **BASE,
            "phone_number": "222-333-4444",
            "from": 3125550199,
            "transfer_list": {"default": "(212) 555-0100"},
        }
    )
    assert to_bland_body(call) == {
        **BASE,
        "phone_number": "+12223334444",
        "from": "+13125550199",
        "transfer_list": {"default": "+12125550100"},
    }
    assert call.from_ == "+13125550199"


def test_start_time_parses_to_an_aware_instant() -> None:
    parsed = parse_start_time("2026-01-01 12:00:00 -05:00")
    assert parsed is not None
    assert parsed.isoformat() == "2026-01-01T12:00:00-05:00"
    utc = parse_start_time("2026-01-01 12:00:00")
    assert utc is not None
    assert utc.isoformat() == "2026-01-01T12:00:00+00:00"


def test_legacy_voicemail_fields_become_the_voicemail_object() -> None:
    call = validate_call(
        {
            **BASE,
            "voicemail_message": "Call us back.",
            "voicemail_action": "leave_message",
            "voicemail_sms": {"from": "+13125550199", "message": "Missed you"},
            "sensitive_voicemail_detection": True,
        }
    )
    assert to_bland_body(call) == {
        **BASE,
        "voicemail": {
            "message": "Call us back.",
            "action": "leave_message",
            "sms": {"from": "+13125550199", "message": "Missed you"},
            "sensitive": True,
        },
    }


def test_legacy_fields_merge_with_the_current_form_when_they_agree() -> None:
    call = validate_call(
        {
            **BASE,
            "voicemail": {"action": "leave_message"},
            "voicemail_message": "Hi",
            "available_tags": ["A"],
            "dispositions": ["A"],
            "local_dialing": True,
        }
    )
    assert to_bland_body(call) == {
        **BASE,
        "voicemail": {"action": "leave_message", "message": "Hi"},
        "dispositions": ["A"],
        "dialing_strategy": {"type": "local"},
    }


def test_local_dialing_false_is_the_default_and_is_dropped() -> None:
    assert to_bland_body(validate_call({**BASE, "local_dialing": False})) == BASE


def test_legacy_passthrough_fields_are_kept() -> None:
    legacy = {"answered_by_enabled": True, "analysis_prompt": "Did they book?", "amd": True}
    assert to_bland_body(validate_call({**BASE, **legacy})) == {**BASE, **legacy}


def test_dynamic_data_empty_string_clears_it() -> None:
    assert to_bland_body(validate_call({**BASE, "dynamic_data": ""})) == BASE


def test_the_full_send_call_example_validates_and_round_trips() -> None:
    example = load_example("send-call-full.json")
    call = validate_call(example)
    assert to_bland_body(call) == example
    assert set(example) == {
        name if name != "from_" else "from"
        for name, field in CallRequest.model_fields.items()
        if not field.exclude and not (field.description or "").startswith("Legacy")
    }


def test_call_create_strips_and_validates_dialer_options() -> None:
    call, options = validate_call_create({**BASE, "dialer": {"priority": 7}})
    assert to_bland_body(call) == BASE
    assert options == DialerOptions(priority=7)
    assert validate_call_create(BASE)[1] == DialerOptions()


def test_call_create_reports_call_and_dialer_errors_together() -> None:
    with pytest.raises(BlandValidationError) as caught:
        validate_call_create(
            {"phone_number": "1", "task": "t", "dialer": {"priority": 12, "colour": "red"}}
        )
    assert caught.value.errors == [
        "Invalid phone number. `1` has these validation errors: "
        '["too short: a phone number has 7 to 15 digits"]',
        "dialer.priority must be at most 9.",
        "dialer: Additional properties are not allowed ('colour' was unexpected)",
    ]


@pytest.mark.parametrize(
    ("dialer", "message"),
    [
        ("soon", "dialer must be an object."),
        (
            {"not_before": "2026-01-01T10:00:00"},
            "dialer.not_before: Input should have timezone info",
        ),
        (
            {"not_before": "2026-01-02T00:00:00Z", "expires_at": "2026-01-01T00:00:00Z"},
            "dialer.expires_at must be after dialer.not_before",
        ),
        (
            {"calling_window": {"start": "21:00", "end": "08:00"}},
            "dialer.calling_window.end must be after dialer.calling_window.start",
        ),
        (
            {"recipient_timezone": "Moon/Base"},
            "dialer.recipient_timezone: unknown IANA time zone 'Moon/Base'",
        ),
    ],
)
def test_dialer_option_errors_name_the_option(dialer: object, message: str) -> None:
    with pytest.raises(BlandValidationError) as caught:
        validate_call_create({**BASE, "dialer": dialer})
    assert caught.value.errors == [message]


# Property tests: any valid body survives to_bland_body -> validate unchanged.
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_nanp = st.from_regex(r"\A\+1[2-9][0-9]{2}[2-9][0-9]{6}\Z")
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_optional: dict[str, st.SearchStrategy[Any]] = {
    "from": _nanp,
    "voice": _text,
    "first_sentence": _text,
    "record": st.booleans(),
    "wait_for_greeting": st.booleans(),
    "max_duration": st.integers(1, 720),
    "temperature": st.floats(0, 1),
    "interruptibility": st.integers(0, 3),
    "interruption_threshold": st.integers(0, 5000),
    "language": st.sampled_from(["en-US", "babel-en", "es", "auto"]),
    "keywords": st.lists(st.from_regex(r"\A[a-z]{1,10}(:-?[0-9]{1,2})?\Z"), max_size=20),
    "metadata": st.dictionaries(_text, _json, max_size=4),
    "request_data": st.dictionaries(_text, _json, max_size=4),
    "background_track": st.sampled_from(["office", "cafe", "restaurant", "none"]),
    "voicemail": st.fixed_dictionaries(
        {"action": st.just("leave_message"), "message": _text.filter(bool)},
        optional={"sensitive": st.booleans()},
    ),
    "start_time": st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
    ),
    "transfer_list": st.dictionaries(_text, _nanp, max_size=3),
    "precall_dtmf_sequence": st.from_regex(r"\A[0-9*#w]{1,12}\Z"),
    "webhook": st.from_regex(r"\Ahttps://[a-z]{1,12}\.example/[a-z]{0,8}\Z"),
}
BODIES = st.fixed_dictionaries({"phone_number": _nanp, "task": _text}, optional=_optional).filter(
    lambda body: body.get("from") != body["phone_number"]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES)
def test_valid_bodies_round_trip_unchanged(body: dict[str, Any]) -> None:
    call = validate_call(body)
    sent = to_bland_body(call)
    assert sent == body
    assert validate_call(json.loads(json.dumps(sent))) == call
