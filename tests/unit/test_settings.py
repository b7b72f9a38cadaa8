"""Settings: DIALER_ variables, secret files, clear errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import load_settings, settings_markdown


def test_defaults_use_an_sqlite_file_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DIALER_DATABASE_URL", raising=False)
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path / "x"))
    settings = load_settings()
    assert settings.database_dsn == f"sqlite+aiosqlite:///{tmp_path}/x/dialer.db"
    assert settings.is_sqlite


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_MAX_CONCURRENT_CALLS", "42")
    monkeypatch.setenv("DIALER_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    settings = load_settings()
    assert settings.max_concurrent_calls == 42
    assert not settings.is_sqlite


def test_a_secret_is_read_from_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    monkeypatch.setenv("DIALER_BLAND_API_KEY_FILE", str(secret))
    settings = load_settings()
    assert settings.bland_api_key is not None
    assert settings.bland_api_key.get_secret_value() == "sk-from-file"
    assert "sk-from-file" not in repr(settings)


def test_an_unreadable_secret_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_WEBHOOK_SECRET_FILE", "/nonexistent/secret")
    with pytest.raises(ConfigError, match="DIALER_WEBHOOK_SECRET_FILE"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIALER_MAX_CONCURRENT_CALLS", "0"),
        ("DIALER_MAX_CALLS_PER_SECOND", "fast"),
        ("DIALER_BLAND_BASE_URL", "ftp://bland"),
        ("DIALER_WEBHOOK_URL", "not a url"),
        ("DIALER_PREFIX", "has space"),
        ("DIALER_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_fails_fast_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value)


def test_the_configuration_table_lists_every_setting_without_secrets() -> None:
    table = settings_markdown()
    assert "`DIALER_MAX_CONCURRENT_CALLS`" in table
    assert "guest:***@" in table
    assert "guest:guest" not in table


def test_every_setting_is_described_in_the_configuration_table() -> None:
    for line in settings_markdown().splitlines()[2:]:
        meaning = line.rsplit("|", 2)[-2].strip()
        assert meaning, f"setting without a description: {line}"
