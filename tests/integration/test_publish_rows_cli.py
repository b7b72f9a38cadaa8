"""`dialer publish` with broken rows against the real broker: nothing is sent unless asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.bus.topology import declare_once
from service.commands.cli import main
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import drain, queue_depth

pytestmark = pytest.mark.integration

BROKEN = (
    "Phone Number;Task;Max_Duration\n"
    "+14155550100;Hi.;3\n"
    '+14155550101;"Hello.;3\n'
    "+14155550102;Bye.;3\n"
)
INVALID = "phone_number,task\n+14155550100,Hi.\n+1,Hi.\n+14155550102,Bye.\n"


@pytest.fixture
async def settings(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's broker objects, declared, and exported for the CLI."""
    monkeypatch.setenv("DIALER_AMQP_URL", broker.url)
    monkeypatch.setenv("DIALER_PREFIX", broker.prefix)
    settings = Settings(prefix=broker.prefix, amqp_url=broker.url)
    await declare_once(settings)
    return settings


async def test_a_broken_row_names_its_line_and_nothing_is_published(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(BROKEN)
    assert await asyncio.to_thread(main, ["publish", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} line 3: a quote opened on this line is never closed: lines 3-4" in err
    assert "nothing published: 1 invalid row(s)" in err
    assert await queue_depth(settings, f"{settings.prefix}.requests") == 0


async def test_skip_invalid_publishes_the_valid_rows_only(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(INVALID)
    assert await asyncio.to_thread(main, ["publish", str(path), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert f"{path} line 3: Invalid phone number" in err
    assert "published 2 of 2 requests" in err
    assert "1 invalid rows skipped" in err
    sent = await drain(settings, f"{settings.prefix}.requests")
    assert [m.body for m in sent] == [
        b'{"phone_number":"+14155550100","task":"Hi."}',
        b'{"phone_number":"+14155550102","task":"Bye."}',
    ]


async def test_a_dry_run_checks_every_row_and_publishes_nothing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(INVALID)
    assert await asyncio.to_thread(main, ["publish", str(path), "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == ["2", "4"]
    assert "dry run: 2 valid request(s), 1 invalid row(s); nothing published" in captured.err
    assert await queue_depth(settings, f"{settings.prefix}.requests") == 0
