"""Splitting a batch.create: each recipient validated alone, placeholders, test_mode, options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumers.batches import BatchIds, CancelBatch, CreateBatch, plan_batch, plan_batch_cancel
from schemas.call import CallRequest
from schemas.recipients import missing_placeholders, split_batch
from schemas.validation import BlandValidationError
from service.bland.batches import legacy_batch_body, legacy_groups, v2_batch_body

SEED = Path(__file__).parents[2] / "schemas" / "examples" / "renewal-reminder-batch.json"


def seed() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(SEED.read_text())
    return body


def test_the_seed_example_fills_each_recipients_placeholders() -> None:
    split = split_batch(seed())
    assert split.shape == "legacy"
    assert [r.errors for r in split.recipients] == [[], [], []]
    calls = [r.call for r in split.recipients]
    assert all(isinstance(c, CallRequest) for c in calls)
    first = calls[0]
    assert first is not None
    assert (first.task or "").startswith(
        "You are calling Maria Lopez to remind them their Home Plus"
    )
    assert "December 14" in (first.task or "")
    assert [r.phone_number for r in split.recipients] == [
        "+12125550142", "+13125550187", "+14155550123",
    ]  # fmt: skip
    assert first.voice == "June"


def test_a_bad_recipient_is_rejected_alone_with_its_index_and_reason() -> None:
    body = seed()
    body["call_data"][1]["phone_number"] = "12"
    del body["call_data"][2]["plan"]
    split = split_batch(body)
    assert split.recipients[0].call is not None
    assert split.recipients[1].call is None
    assert split.recipients[1].errors[0].startswith("call_data[1].phone_number: Invalid phone")
    assert split.recipients[2].errors == [
        "call_data[2]: no value for placeholder {{plan}} in base_prompt."
    ]
    assert [r.index for r in split.rejected] == [1, 2]


def test_all_or_nothing_rejects_the_whole_batch() -> None:
    body = {**seed(), "dialer": {"all_or_nothing": True}}
    body["call_data"][0]["phone_number"] = "12"
    with pytest.raises(BlandValidationError) as caught:
        split_batch(body)
    assert caught.value.errors[0].startswith("call_data[0].phone_number")


def test_test_mode_takes_the_first_recipient_only() -> None:
    split = split_batch({**seed(), "test_mode": True})
    assert [r.index for r in split.recipients] == [0]
    assert split.test_mode


def test_request_data_fills_a_placeholder_the_entry_lacks() -> None:
    assert missing_placeholders("Hi {{ name }}, {{x}} {{Name}}", {"name": 1}) == ["x", "Name"]
    body = {**seed(), "request_data": {"plan": "Gold"}}
    del body["call_data"][0]["plan"]
    assert split_batch(body).recipients[0].errors == []


def test_v2_items_are_checked_one_by_one() -> None:
    body = {
        "global": {"task": "Hello", "voice": "June"},
        "call_objects": [{"phone_number": "+14155550100"}, {"phone_number": "x"}, 7],
        "dialer": {"dispatch": "bland", "priority": 7},
    }
    split = split_batch(body)
    assert [r.call is not None for r in split.recipients] == [True, False, False]
    assert split.recipients[2].errors == ["call_objects[2] must be an object."]
    assert split.options.dispatch == "bland"
    assert split.options.call_options().priority == 7


@pytest.mark.parametrize(
    "body",
    [
        {"global": {"task": "x"}, "call_objects": []},
        {"base_prompt": "x", "call_data": []},
        {"base_prompt": "x", "call_data": [{}], "voice": 3},
        {"global": {"task": "x"}, "base_prompt": "y"},
        {"base_prompt": "x", "call_data": [{"phone_number": "+14155550100"}], "dialer": 1},
    ],
)
def test_a_batch_invalid_as_a_whole_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(BlandValidationError):
        split_batch(body)


def test_plan_gives_each_recipient_a_stable_request_id() -> None:
    body = seed()
    body["call_data"][2]["phone_number"] = ""
    ids = BatchIds("batch-1", "corr", "replies")
    planned = plan_batch(body, ids, replace_webhook=True, default_dispatch="expand")
    assert isinstance(planned, CreateBatch)
    batch = planned.batch
    assert [c.request_id for c in batch.calls] == ["batch-1:0", "batch-1:1"]
    assert [(r.request_id, r.index) for r in batch.rejected] == [("batch-1:2", 2)]
    assert {c.batch_request_id for c in batch.calls} == {"batch-1"}
    assert batch.calls[1].recipient_index == 1
    assert "dialer" not in batch.calls[0].body


def test_the_strings_true_and_false_are_read_as_booleans_in_a_pronunciation_guide() -> None:
    body = {
        "phone_number": "+14155550100",
        "task": "x",
        "pronunciation_guide": [
            {"word": "Acme", "pronunciation": "ack-me", "case_sensitive": "true", "spaced": "false"}
        ],
    }
    call = CallRequest.model_validate(body)
    assert call.pronunciation_guide is not None
    item = call.pronunciation_guide[0]
    assert (item.case_sensitive, item.spaced) == (True, False)


def test_batch_cancel_by_request_id_or_bland_batch_id() -> None:
    assert plan_batch_cancel({"request_id": "b"}) == CancelBatch("b", None)
    assert plan_batch_cancel({"batch_id": "x"}) == CancelBatch(None, "x")
    assert isinstance(plan_batch_cancel({"call_id": "c"}), list)


def test_calls_that_share_all_but_number_and_task_share_one_legacy_batch() -> None:
    bodies: list[dict[str, Any]] = [
        {
            "phone_number": "+1",
            "task": "a",
            "voice": "June",
            "metadata": {"dialer_request_id": "r0"},
        },
        {
            "phone_number": "+2",
            "task": "b",
            "voice": "June",
            "metadata": {"dialer_request_id": "r1"},
        },
        {"phone_number": "+1", "task": "c", "voice": "June"},  # the same number: another batch
        {"phone_number": "+3", "task": "d", "voice": "Josh"},
    ]
    assert legacy_groups(bodies) == [[0, 1], [2], [3]]
    legacy = legacy_batch_body(bodies[:2], label="x")
    assert legacy["base_prompt"] == "{{dialer_task}}"
    assert legacy["call_data"] == [
        {"phone_number": "+1", "dialer_task": "a"}, {"phone_number": "+2", "dialer_task": "b"},
    ]  # fmt: skip
    assert legacy["voice"] == "June"
    v2 = v2_batch_body(bodies[:2], description="d", status_webhook=None)
    assert v2["global"] == {"task": "a", "voice": "June"}
    assert v2["call_objects"][1] == {
        "phone_number": "+2", "task": "b", "metadata": {"dialer_request_id": "r1"},
    }  # fmt: skip
