"""Parsing of `dialer publish` inputs: formats, CSV cells, stable ids."""

from __future__ import annotations

import json

import pytest

from schemas.envelope import content_request_id
from service.commands.requests import (
    InputError,
    detect_format,
    parse_requests,
    stable_request_id,
)
from service.commands.rows import csv_cell

A = {"phone_number": "+15555550142", "task": "Hi."}
B = {"phone_number": "+15555550143", "task": "Hello."}


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("calls.csv", "phone_number\n1\n", "csv"),
        ("calls.jsonl", json.dumps(A), "jsonl"),
        ("calls.ndjson", json.dumps(A), "jsonl"),
        ("calls.txt", json.dumps([A, B]), "json"),
        ("calls.txt", json.dumps(A, indent=2), "json"),
        ("calls.txt", json.dumps(A) + "\n" + json.dumps(B), "jsonl"),
        ("calls", "phone_number,task\n", "csv"),
    ],
)
def test_the_format_comes_from_the_extension_or_the_content(name: str, text: str, fmt: str) -> None:
    assert detect_format(name, text) == fmt


def test_a_json_object_array_and_jsonl_give_the_same_requests() -> None:
    one, _ = parse_requests(json.dumps(A), "json")
    many, _ = parse_requests(json.dumps([A, B]), "json")
    lines, _ = parse_requests(f"{json.dumps(A)}\n\n{json.dumps(B)}\n", "jsonl")
    assert [o.body for o in one] == [A]
    assert [o.body for o in many] == [o.body for o in lines] == [A, B]
    assert [o.request_id for o in many] == [o.request_id for o in lines]


def test_ids_are_the_consumers_content_hash_and_survive_edits_and_reordering() -> None:
    first, _ = parse_requests(json.dumps([A, B]), "json")
    edited, _ = parse_requests(
        json.dumps([B, {"phone_number": "+15555550199", "task": "x"}, A]), "json"
    )
    assert first[0].request_id == content_request_id("call.create", json.dumps(A).encode())
    assert {o.request_id for o in first} <= {o.request_id for o in edited}


def test_a_salt_gives_new_ids_and_identical_rows_are_one_request() -> None:
    plain, dropped = parse_requests(json.dumps([A, A, B]), "json")
    salted, _ = parse_requests(json.dumps([A, B]), "json", id_salt="2026-11-25")
    assert dropped == 1
    assert len(plain) == 2
    assert not {o.request_id for o in plain} & {o.request_id for o in salted}
    assert stable_request_id("call.create", A, "s") == stable_request_id(
        "call.create", dict(A), "s"
    )


def test_the_id_can_come_from_a_field_which_is_removed() -> None:
    items, _ = parse_requests(json.dumps([{**A, "ref": "crm-17"}]), "json", id_field="ref")
    assert items[0].request_id == "crm-17"
    assert items[0].body == A
    with pytest.raises(InputError, match="item 1: ref"):
        parse_requests(json.dumps([A]), "json", id_field="ref")


def test_csv_rows_are_typed_nested_and_skip_empty_cells() -> None:
    text = (
        "phone_number,task,max_duration,record,request_data.name,request_data.zip,dialer.priority,voice\n"
        "5555550142,Hi.,12,true,Ann,02134,3,\n"
    )
    (item,), _ = parse_requests(text, "csv")
    assert item.body == {
        "phone_number": "5555550142",
        "task": "Hi.",
        "max_duration": 12,
        "record": True,
        "request_data": {"name": "Ann", "zip": "02134"},
        "dialer": {"priority": 3},
    }
    assert item.row == 2  # its line in the file


@pytest.mark.parametrize(
    ("column", "cell", "value"),
    [
        ("temperature", "0.7", 0.7),
        ("wait_for_greeting", "FALSE", False),
        ("metadata", '{"a": 1}', {"a": 1}),
        ("metadata", "{not json", "{not json"),
        ("phone_number", "15555550142", "15555550142"),
        ("request_data.phone_number", "15555550142", "15555550142"),
        ("voice", "123", "123"),
        ("request_data.code", "007", "007"),
    ],
)
def test_csv_cells(column: str, cell: str, value: object) -> None:
    assert csv_cell(column, cell) == value


def test_task_fills_rows_without_task_or_pathway() -> None:
    text = "phone_number,pathway_id\n5555550142,\n5555550143,p-1\n"
    items, _ = parse_requests(text, "csv", task="Remind them.")
    assert items[0].body["task"] == "Remind them."
    assert "task" not in items[1].body


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("name\nAnn\n", "csv", "phone_number column"),
        ("{nope", "json", "not valid JSON"),
        ('{"a": 1}\n{nope\n', "jsonl", "line 2"),
        ("[1]", "json", "item 1: expected a JSON object"),
    ],
)
def test_bad_inputs_name_the_problem(text: str, fmt: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_requests(text, fmt)
