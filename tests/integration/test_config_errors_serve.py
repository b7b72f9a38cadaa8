"""Start-up against real servers: refusals no retry can cure end `dialer` at once, in one line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from yarl import URL

from service.commands.cli import main
from tests.conftest import Broker, postgres_base_url

pytestmark = pytest.mark.integration

START_DEADLINE_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`dialer serve` in a child process; it must exit by itself."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    base.update(
        DIALER_BLAND_API_KEY="k",
        DIALER_PREFIX=f"t{uuid.uuid4().hex[:12]}",
        DIALER_HTTP_PORT=str(_free_port()),
        DIALER_DATA_DIR=str(tmp_path),
        DIALER_LOG_FORMAT="json",
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "service.commands.cli", "serve"],
        env=base,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result.stdout
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_a_missing_postgres_database_is_a_configuration_error(
    broker: Broker, tmp_path: Path
) -> None:
    url = URL(postgres_base_url()).with_path(f"/missing_{uuid.uuid4().hex[:8]}")
    result = _serve(tmp_path, DIALER_AMQP_URL=broker.url, DIALER_DATABASE_URL=str(url))
    assert result.returncode == 2
    line = _last_line(result)
    assert line.startswith("dialer: DIALER_DATABASE_URL: the database does not exist")
    assert url.path[1:] in line


def test_wrong_broker_credentials_are_a_configuration_error(broker: Broker, tmp_path: Path) -> None:
    url = URL(broker.url).with_password(f"wrong-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    result = _serve(tmp_path, DIALER_AMQP_URL=str(url))
    assert result.returncode == 2
    line = _last_line(result)
    assert line.startswith("dialer: DIALER_AMQP_URL: the broker at ")
    assert "(wrong user name or password)" in line
    assert "wrong-" not in result.stderr  # the password is never printed
    assert time.monotonic() - started < START_DEADLINE_S


def test_a_missing_vhost_is_a_configuration_error(broker: Broker, tmp_path: Path) -> None:
    vhost = f"missing-{uuid.uuid4().hex[:6]}"
    result = _serve(tmp_path, DIALER_AMQP_URL=str(URL(broker.url).with_path(f"/{vhost}")))
    assert result.returncode == 2
    line = _last_line(result)
    assert f"has no virtual host '{vhost}'" in line
    assert "Connection.OpenOk" not in result.stderr


def test_an_http_amqp_url_stops_before_anything_starts(tmp_path: Path) -> None:
    result = _serve(tmp_path, DIALER_AMQP_URL="http://127.0.0.1:5672/")
    assert result.returncode == 2
    assert _last_line(result).startswith(
        "dialer: DIALER_AMQP_URL: must be an amqp:// or amqps:// URL (got http scheme)"
    )
    assert "service_started" not in result.stderr


async def test_cli_commands_name_a_refused_broker_and_an_absent_one(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIALER_PREFIX", broker.prefix)
    monkeypatch.setenv("DIALER_AMQP_URL", str(URL(broker.url).with_password("wrong")))
    for argv in (["events"], ["dead-letters", "list"]):
        assert await asyncio.to_thread(main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dialer: DIALER_AMQP_URL: the broker at ")
        assert len(err.splitlines()) == 1
    monkeypatch.setenv("DIALER_AMQP_URL", f"amqp://guest:guest@127.0.0.1:{_free_port()}/")
    assert await asyncio.to_thread(main, ["events"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("dialer: DIALER_AMQP_URL: no broker answers at 127.0.0.1:")
    assert len(err.splitlines()) == 1


def test_each_broker_retry_is_logged_once(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens: start-up retries until the timeout stops it
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    base.update(
        DIALER_BLAND_API_KEY="k",
        DIALER_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/",
        DIALER_HTTP_PORT=str(_free_port()),
        DIALER_DATA_DIR=str(tmp_path),
        DIALER_LOG_FORMAT="json",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "service.commands.cli", "serve"],
        env=base,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        while time.monotonic() < deadline and sum("start_waiting" in x for x in lines) < 3:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        process.terminate()
        process.communicate(timeout=START_DEADLINE_S)
    # asyncio says "Connect call failed (host, port)", uvloop "Connection refused".
    signs = ("Connect call failed", "Connection refused", str(port))
    failures = [x for x in lines if any(sign in x for sign in signs)]
    waits = [x for x in failures if "start_waiting" in x]
    assert len(waits) >= 3
    assert failures == waits  # no second line (aiormq's own) for the same attempt


@pytest.mark.parametrize("command", ["status", "migrate"])
async def test_ledger_commands_name_a_missing_database_and_an_absent_server(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = URL(postgres_base_url()).with_path(f"/missing_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("DIALER_DATABASE_URL", str(missing))
    assert await asyncio.to_thread(main, [command]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dialer: DIALER_DATABASE_URL: the database does not exist")
    assert len(err.splitlines()) == 1
    absent = URL(postgres_base_url()).with_port(_free_port())
    monkeypatch.setenv("DIALER_DATABASE_URL", str(absent))
    assert await asyncio.to_thread(main, [command]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("dialer: DIALER_DATABASE_URL: ledger unavailable")
    assert len(err.splitlines()) == 1
