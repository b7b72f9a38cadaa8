"""CSV rows for `dialer publish`: malformed rows named by line, any header case, sniffed delimiter."""

from __future__ import annotations

import pytest

from service.commands.requests import read_requests
from service.commands.rows import HeaderError, column_name, csv_records, header_delimiter


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("phone_number,task", ","),
        ("phone_number;task;max_duration", ";"),
        ("phone_number\ttask", "\t"),
        ("phone_number|task", "|"),
        ("phone_number", ","),
        ("phone_number;task;note,x", ";"),
        ("phone_number;task,x", ","),  # a tie: the comma
    ],
)
def test_the_delimiter_is_read_from_the_header(header: str, delimiter: str) -> None:
    assert header_delimiter(f"\n{header}\n1;2,3\n") == delimiter


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Phone_Number", "phone_number"),
        (" PHONE NUMBER ", "phone_number"),
        ("max-duration", "max_duration"),
        ("Request_Data.FirstName", "request_data.FirstName"),
    ],
)
def test_header_names_match_in_any_case(raw: str, name: str) -> None:
    assert column_name(raw) == name


def test_a_semicolon_file_with_capitalised_headers_reads_like_a_comma_one() -> None:
    semicolon = "Phone Number;Task;Max_Duration\n+14155550100;Hi, there.;3\n"
    comma = 'phone_number,task,max_duration\n+14155550100,"Hi, there.",3\n'
    assert csv_records(semicolon) == csv_records(comma)
    (row,) = csv_records(semicolon)
    assert row.body == {"phone_number": "+14155550100", "task": "Hi, there.", "max_duration": 3}


def test_an_unclosed_quote_at_the_end_names_the_line_it_opens_on() -> None:
    text = 'phone_number,task\n+14155550100,Hi.\n+14155550101,"Hello.\n+14155550102,Bye.\n'
    first, broken = csv_records(text)
    assert first.problem is None
    assert broken.line == 3
    assert broken.problem == (
        "a quote opened on this line is never closed: lines 3-4 cannot be read as rows"
    )


def test_a_quote_that_swallows_the_next_row_is_refused_not_merged() -> None:
    text = 'phone_number,task\n+14155550100,"Hi.\n+14155550101,Hello."\n+14155550102,Bye.\n'
    merged, last = csv_records(text)
    assert (merged.line, merged.body) == (2, None)
    assert merged.problem is not None
    assert "lines 2-3" in merged.problem
    assert (last.line, last.body) == (4, {"phone_number": "+14155550102", "task": "Bye."})
    allowed, _ = csv_records(text, multiline=True)
    assert allowed.body == {"phone_number": "+14155550100", "task": "Hi.\n+14155550101,Hello."}


@pytest.mark.parametrize(("row", "count"), [("+14155550100,Hi.,3,extra", 4), ("+14155550100", 1)])
def test_a_row_with_the_wrong_number_of_cells_is_named(row: str, count: int) -> None:
    (record,) = csv_records(f"phone_number,task,max_duration\n\n{row}\n")
    assert record.line == 3  # blank lines count
    assert record.problem == f"{count} cells, but the header has 3"


def test_a_header_without_phone_number_or_with_a_column_twice_is_refused() -> None:
    with pytest.raises(HeaderError, match="phone_number column"):
        csv_records("name\nAnn\n")
    with pytest.raises(HeaderError, match="column phone_number appears twice"):
        csv_records("phone_number,Phone Number\n1,2\n")


def test_every_row_is_checked_with_the_services_schemas() -> None:
    text = (
        "phone_number,task,max_duration\n"
        "+14155550100,Hi.,3\n"
        "+1,Hi.,3\n"
        "+14155550101,,3\n"
        "+14155550102,Hi.,9999\n"
        "+14155550100,Hi.,3\n"
    )
    parsed = read_requests(text, "csv")
    assert [item.row for item in parsed.items] == [2]
    assert parsed.duplicates == 1
    assert [where for where, _ in parsed.problems] == ["line 3", "line 4", "line 5"]
    problems = dict(parsed.problems)
    assert "phone number" in problems["line 3"].lower()
    assert "task" in problems["line 4"]
    assert "max_duration" in problems["line 5"]
