"""Batch bodies: legacy and v2 shapes, every recipient checked on its own, expansion to calls."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.batch import (
    BatchV2Request,
    LegacyBatchRequest,
    expand_batch,
    fill_placeholders,
    validate_batch,
    validate_batch_create,
)
from schemas.call import to_bland_body
from schemas.validation import BlandValidationError

PHONE = "Invalid phone number. Please include a country code if outside the US."
UUID7 = "01890a5d-ac96-774b-bcce-b302099a8057"


def errors_of(body: object) -> list[str]:
    with pytest.raises(BlandValidationError) as caught:
        validate_batch(body)
    return caught.value.errors


def example(name: str) -> Any:
    return json.loads(resources.files("schemas").joinpath("examples", name).read_text())


def v2(*objects: Any, **glob: Any) -> dict[str, Any]:
    return {"global": {"task": "Confirm the delivery.", **glob}, "call_objects": list(objects)}


def test_the_renewal_reminder_batch_expands_to_one_call_per_recipient() -> None:
    batch = validate_batch(example("renewal-reminder-batch.json"))
    assert isinstance(batch, LegacyBatchRequest)
    calls = [to_bland_body(call) for call in expand_batch(batch)]
    assert [call["phone_number"] for call in calls] == [
        "+12125550142",
        "+13125550187",
        "+14155550123",
    ]
    assert calls[1]["task"].startswith(
        "You are calling James Carter to remind them their Auto Basic policy renews on December 20."
    )
    shared = {
        "from": "+12125550100",
        "voice": "June",
        "max_duration": 5,
        "record": True,
        "wait_for_greeting": True,
        "metadata": {"campaign": "renewals-2026-12"},
    }
    for call in calls:
        assert "{{" not in call["task"]
        assert {k: v for k, v in call.items() if k not in ("phone_number", "task")} == shared


def test_legacy_test_mode_places_only_the_first_call() -> None:
    body = {**example("renewal-reminder-batch.json"), "test_mode": True}
    calls = expand_batch(validate_batch(body))
    assert [call.phone_number for call in calls] == ["+12125550142"]


def test_unknown_placeholders_are_left_for_bland() -> None:
    assert fill_placeholders("Hi {{name}}, {{ plan }} {{other}}", {"name": "Al", "plan": 3}) == (
        "Hi Al, 3 {{other}}"
    )
    assert fill_placeholders("{{Name}}", {"name": "case matters"}) == "{{Name}}"
    assert fill_placeholders(
        "{{a}} {{b}} {{c}} {{d}}", {"a": True, "b": None, "c": 2.5, "d": "é"}
    ) == ("true  2.5 é")


@pytest.mark.parametrize(
    ("patch", "errors"),
    [
        ({"base_prompt": 5}, ["base_prompt must be a string."]),
        ({"base_prompt": None}, ["Missing required parameter: base_prompt."]),
        ({"call_data": "x"}, ["call_data must be an array of objects."]),
        (
            {"call_data": [{"name": "a"}, 5]},
            [
                "call_data must be an array of objects.",
                "call_data[0].phone_number: Entry #1 did not have a phone number.",
            ],
        ),
        ({"label": 3}, ["label must be a string."]),
        ({"test_mode": "yes"}, ["test_mode must be a boolean."]),
        ({"batch_webhook": "http://x.example"}, ["batch_webhook must be a valid https URL."]),
        ({"from": "1"}, ["Invalid from number format"]),
        ({"record": 1}, ["Record must be a boolean"]),
        (
            {"phone_number": "+12223334444"},
            ["phone_number is not allowed here; use call_data entries."],
        ),
        ({"task": "t"}, ["task is not allowed here; use base_prompt."]),
        ({"flavour": "x"}, ["Additional properties are not allowed ('flavour' was unexpected)"]),
    ],
)
def test_legacy_batch_fields(patch: dict[str, Any], errors: list[str]) -> None:
    body = {**example("renewal-reminder-batch.json"), **patch}
    assert errors_of({k: v for k, v in body.items() if v is not None}) == errors


def test_legacy_recipients_are_checked_one_by_one_with_their_index() -> None:
    body = {
        "base_prompt": "Hello {{name}}",
        "call_data": [
            {"phone_number": "+12223334444", "name": "ok"},
            {"name": "no number"},
            {"phone_number": "12223334444"},
            {"phone_number": "+12125550100"},
        ],
        "transfer_phone_number": "+12125550100",
    }
    assert errors_of(body) == [
        "call_data[1].phone_number: Entry #2 did not have a phone number.",
        f"call_data[2].phone_number: {PHONE}",
        "call_data[3].transfer_phone_number: Transfer phone number cannot be the same as the phone number.",
    ]


def test_legacy_recipients_are_checked_even_when_the_batch_fields_are_wrong() -> None:
    body = {"base_prompt": "x", "record": "y", "call_data": [{"phone_number": "nope"}]}
    assert errors_of(body) == ["Record must be a boolean", f"call_data[0].phone_number: {PHONE}"]


def test_v2_call_objects_override_global_and_numbers_are_normalised() -> None:
    body = v2(
        {"phone_number": "222-333-4444", "request_data": {"order": 1}},
        {"phone_number": "+13125550187", "record": False, "b_cid": UUID7},
        record=True,
        voicemail={"action": "hangup"},
    )
    batch = validate_batch(body)
    assert isinstance(batch, BatchV2Request)
    assert batch.description == "Untitled Batch"
    calls = [to_bland_body(call) for call in expand_batch(batch)]
    assert calls == [
        {
            "phone_number": "+12223334444",
            "task": "Confirm the delivery.",
            "record": True,
            "voicemail": {"action": "hangup"},
            "request_data": {"order": 1},
        },
        {
            "phone_number": "+13125550187",
            "task": "Confirm the delivery.",
            "record": False,
            "voicemail": {"action": "hangup"},
        },
    ]


def test_v2_pathway_instead_of_task() -> None:
    body = {
        "global": {"pathway_id": "3c9a0f5e-8d0b-4b7e-9a51-2f4c6d1e7a90"},
        "call_objects": [{"phone_number": "+12223334444"}],
        "description": "Pathway run",
        "status_webhook": "https://hooks.example/batch",
    }
    assert [call.pathway_id for call in expand_batch(validate_batch(body))] == [
        "3c9a0f5e-8d0b-4b7e-9a51-2f4c6d1e7a90"
    ]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"call_objects": [{"phone_number": "+12223334444"}]},
            ["Missing required parameter: global."],
        ),
        ({"global": {"task": "t"}}, ["Missing required parameter: call_objects."]),
        (
            {"global": {"task": "t"}, "call_objects": []},
            ["call_objects must be a non-empty array of objects."],
        ),
        (
            {"global": "t", "call_objects": [{"phone_number": "+12223334444"}]},
            ["global must be an object."],
        ),
        (
            {"global": {}, "call_objects": [{"phone_number": "+12223334444"}]},
            ["global.task: Missing required parameter: task."],
        ),
        (
            v2({"phone_number": "+12223334444"}, phone_number="+12223334445"),
            [
                "global.phone_number: phone_number is not allowed in global; put it in each call object."
            ],
        ),
        (
            v2({"phone_number": "+12223334444"}, record="y"),
            ["global.record: Record must be a boolean"],
        ),
        (
            {**v2({"phone_number": "+12223334444"}), "description": "x" * 61},
            ["description must be at most 60 characters."],
        ),
        (
            {**v2({"phone_number": "+12223334444"}), "status_webhook": "ftp://x"},
            ["status_webhook must be a valid https URL."],
        ),
        (
            {**v2({"phone_number": "+12223334444"}), "name": "x"},
            ["Additional properties are not allowed ('name' was unexpected)"],
        ),
        (
            v2(
                {"phone_number": "+12223334444"},
                {"phone_number": "+12223334444"},
                {"phone_number": "+12223334444"},
                {"phone_number": "12223334444"},
                {"record": True},
                "not an object",
                {"phone_number": "+12223334444", "b_cid": "4a1c9e7e-0000-4000-8000-000000000000"},
                {"phone_number": "+12223334444", "colour": "red"},
                {"phone_number": "+12223334444", "transfer_phone_number": "+12223334444"},
            ),
            [
                f"call_objects[3].phone_number: {PHONE}",
                "call_objects[4].phone_number: Entry #5 did not have a phone number.",
                "call_objects[5] must be an object.",
                "call_objects[6].b_cid: b_cid must be a UUID v7.",
                "call_objects[7]: Additional properties are not allowed ('colour' was unexpected)",
                "call_objects[8].transfer_phone_number: Transfer phone number cannot be the same as the phone number.",
            ],
        ),
    ],
)
def test_v2_errors_name_the_recipient(body: dict[str, Any], errors: list[str]) -> None:
    assert errors_of(body) == errors


def test_a_merged_call_is_checked_as_a_whole() -> None:
    body = v2(
        {"phone_number": "+12125550100", "post_call_evals": {"workbench_setup_id": "w"}},
        transfer_phone_number="+12125550100",
        record=False,
    )
    assert errors_of(body) == [
        "call_objects[0].transfer_phone_number: Transfer phone number cannot be the same as the phone number.",
        "call_objects[0].post_call_evals: post_call_evals requires the call to be recorded (record cannot be false).",
    ]


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"label": "x"},
        {"base_prompt": "x", "call_data": [], "global": {}, "call_objects": []},
    ],
)
def test_neither_shape_is_refused(body: object) -> None:
    errors = errors_of(body)
    assert errors in (
        ["Call parameters must be an object."],
        [
            "Batch parameters must have either global and call_objects (v2) or base_prompt and call_data (legacy)."
        ],
    )
    assert (errors == ["Call parameters must be an object."]) == (not isinstance(body, dict))


_nanp = st.from_regex(r"\A\+1[2-9][0-9]{2}[2-9][0-9]{6}\Z")


@given(
    st.lists(
        st.fixed_dictionaries({"phone_number": _nanp}, optional={"record": st.booleans()}),
        min_size=1,
        max_size=8,
    )
)
def test_v2_expansion_keeps_order_and_each_override(objects: list[dict[str, Any]]) -> None:
    batch = validate_batch(v2(*objects, record=True, max_duration=3))
    calls = expand_batch(batch)
    assert [c.phone_number for c in calls] == [o["phone_number"] for o in objects]
    assert [c.record for c in calls] == [o.get("record", True) for o in objects]
    assert all(c.max_duration == 3 for c in calls)
    again = validate_batch(
        json.loads(json.dumps(batch.model_dump(mode="json", by_alias=True, exclude_unset=True)))
    )
    assert [to_bland_body(c) for c in expand_batch(again)] == [to_bland_body(c) for c in calls]


def test_batch_create_strips_and_validates_dialer_options() -> None:
    body = {**example("renewal-reminder-batch.json"), "dialer": {"priority": 2}}
    batch, options = validate_batch_create(body)
    assert isinstance(batch, LegacyBatchRequest)
    assert options.priority == 2
    with pytest.raises(BlandValidationError) as caught:
        validate_batch_create({**v2({"phone_number": "1"}), "dialer": {"priority": -1}})
    assert caught.value.errors == [
        "call_objects[0].phone_number: Invalid phone number. `1` has these validation errors: "
        '["too short: a phone number has 7 to 15 digits"]',
        "dialer.priority must be at least 0.",
    ]
