"""Bad settings stop start-up with one line naming the variable and what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import load_settings


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_a_postgres_url_without_the_async_driver_suggests_asyncpg(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    message = _error(monkeypatch, DIALER_DATABASE_URL=f"{scheme}://u:secret@db/dialer")
    assert message.startswith("DIALER_DATABASE_URL: ")
    assert "postgresql+asyncpg://" in message
    assert "secret" not in message


def test_an_unknown_database_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DIALER_DATABASE_URL="mysql://u@db/x")
    assert "DIALER_DATABASE_URL: unsupported scheme mysql://" in message


def test_the_supported_database_urls_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("postgresql+asyncpg://u@db/x", "sqlite+aiosqlite:///tmp/x.db"):
        monkeypatch.setenv("DIALER_DATABASE_URL", url)
        assert load_settings().database_dsn == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:5672/", "https://mq", "127.0.0.1:5672"])
def test_an_amqp_url_that_is_not_amqp_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = _error(monkeypatch, DIALER_AMQP_URL=url)
    assert message.startswith("DIALER_AMQP_URL: must be an amqp:// or amqps:// URL")


def test_amqps_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_AMQP_URL", "amqps://u:p@mq:5671/v")
    assert load_settings().amqp_url.get_secret_value() == "amqps://u:p@mq:5671/v"


@pytest.mark.parametrize("name", ["BLAND_API_KEY", "WEBHOOK_SECRET", "AMQP_URL", "DATABASE_URL"])
def test_a_secret_and_its_file_both_set_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("amqp://u:p@mq/")
    message = _error(
        monkeypatch, **{f"DIALER_{name}": "amqp://u:p@mq/", f"DIALER_{name}_FILE": str(secret)}
    )
    assert message == f"DIALER_{name} and DIALER_{name}_FILE are both set: keep one"


def test_several_bad_values_are_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, DIALER_AMQP_URL="http://x", DIALER_MAX_CONCURRENT_CALLS="0")
    assert "DIALER_AMQP_URL: " in message
    assert "; DIALER_MAX_CONCURRENT_CALLS: " in message
