"""A CSV as one batch: placeholders per row, shared call fields, every malformed line named."""

from __future__ import annotations

import pytest

from schemas.recipients import split_batch
from service.commands.batch_csv import BatchCsvError, batch_from_csv

PROMPT = "Hi {{name}}, your {{plan}} renews {{renewal_date}}."


def test_each_row_is_a_recipient_and_a_shared_call_field_goes_to_the_batch() -> None:
    text = (
        "phone_number,name,plan,renewal_date,max_duration\n"
        "+12125550142,Maria,Home Plus,December 14,5\n"
        "\n"
        '(312) 555-0187,James,"Auto, Basic",December 20,5\n'
    )
    batch = batch_from_csv(text, PROMPT)
    assert batch.lines == [2, 4]
    assert batch.body["max_duration"] == 5
    assert batch.body["call_data"][1] == {
        "phone_number": "(312) 555-0187", "name": "James", "plan": "Auto, Basic",
        "renewal_date": "December 20",
    }  # fmt: skip
    split = split_batch(batch.body)
    assert [r.errors for r in split.recipients] == [[], []]


def test_every_malformed_line_is_reported_with_its_number() -> None:
    text = "phone_number,name\n+12125550142,Maria\n+12125550143\n+12125550144,Bo,extra\n,Nobody\n"
    with pytest.raises(BatchCsvError) as caught:
        batch_from_csv(text, "Hi {{name}}")
    assert str(caught.value).splitlines() == [
        "line 3: 1 cells, the header has 2",
        "line 4: 3 cells, the header has 2",
        "line 5: phone_number is empty",
    ]


def test_a_call_field_that_differs_between_rows_is_refused() -> None:
    text = "phone_number,voice\n+12125550142,June\n+12125550143,Josh\n"
    with pytest.raises(BatchCsvError, match="line 3: voice differs from line 2"):
        batch_from_csv(text, "Hi")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name\nMaria\n", "line 1: the header needs a phone_number column"),
        ("phone_number,a,a\n1,2,3\n", "line 1: column 'a' appears twice"),
        ("phone_number\n", "no recipients"),
    ],
)
def test_bad_headers_and_empty_files(text: str, message: str) -> None:
    with pytest.raises(BatchCsvError, match=message):
        batch_from_csv(text, "Hi")
