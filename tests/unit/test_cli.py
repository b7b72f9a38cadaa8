"""The `dialer` command line: version, a description of the tool, help for every option."""

from __future__ import annotations

import argparse

import pytest

from service.commands.cli import build_parser, main, package_version


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dialer {package_version()}"
    assert package_version()[0].isdigit()


def test_help_describes_the_tool_and_its_exit_codes() -> None:
    parser, _ = build_parser()
    text = parser.format_help()
    assert "places phone calls through Bland AI" in text
    assert "exit codes" in text
    assert "2 configuration error" in text
    assert "composition" not in text  # not the code's layout
    assert "module" not in text


def test_every_option_of_every_command_has_help() -> None:
    parser, _ = build_parser()
    missing = [
        f"dialer {name} {action.option_strings or action.dest}"
        for name, sub in _subparsers(parser).items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []


def test_every_command_has_a_description() -> None:
    parser, _ = build_parser()
    assert {"serve", "sandbox", "status", "dead-letters", "events", "publish"} <= set(
        _subparsers(parser)
    )
    assert all(sub.description for sub in _subparsers(parser).values())
