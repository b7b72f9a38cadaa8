"""The README's contract and configuration sections are generated, never hand-copied."""

from __future__ import annotations

from service.commands.readme import README, render


def test_the_readme_sections_match_the_code() -> None:
    current = README.read_text(encoding="utf-8")
    assert render(current) == current, "README.md is out of date: run `make readme`"


def test_the_contract_names_every_request_kind_and_event() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("call.create", "call.cancel", "call.accepted", "call.queued", "call.unresolved"):
        assert f"`{name}`" in text
    assert "`DIALER_MAX_CONCURRENT_CALLS`" in text
