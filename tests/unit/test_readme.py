"""The README's tables and docs/contract.md are generated, never hand-copied."""

from __future__ import annotations

from service.commands.readme import CONTRACT, README, render, render_contract


def test_the_readme_sections_match_the_code() -> None:
    current = README.read_text(encoding="utf-8")
    assert render(current) == current, "README.md is out of date: run `make readme`"


def test_the_contract_matches_the_code() -> None:
    current = CONTRACT.read_text(encoding="utf-8")
    assert render_contract(current) == current, "docs/contract.md is out of date: `make readme`"


def test_the_contract_names_every_request_kind_and_event() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    for name in ("call.create", "call.cancel", "call.accepted", "call.queued", "call.unresolved"):
        assert f"`{name}`" in text
    assert "`DIALER_MAX_CONCURRENT_CALLS`" in README.read_text(encoding="utf-8")


def test_the_readme_links_the_contract_and_keeps_the_users_order() -> None:
    text = README.read_text(encoding="utf-8")
    assert "(docs/contract.md)" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    order = [
        "## What it does",
        "## Requirements",
        "## A local run in five minutes",
        "## Deployment",
        "## Scaling",
        "## Alerts and what to do",
        "## Configuration",
        "## Message contract",
    ]
    positions = [headings.index(h) for h in order]
    assert positions == sorted(positions)
    assert text.index("make demo") < text.index("## What it does")
