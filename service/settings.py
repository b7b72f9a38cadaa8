"""The one settings object, read from `DIALER_*` variables (and secret files) once at start-up."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.dialing.windows import parse_window
from service.errors import ConfigError

ENV_PREFIX = "DIALER_"
SECRET_FIELDS = ("bland_api_key", "webhook_secret", "amqp_url", "database_url")


def _read_secret_files(values: dict[str, Any]) -> dict[str, Any]:
    """Fill a secret from `DIALER_<NAME>_FILE` (the Kubernetes/Docker secret-file convention)."""
    for name in SECRET_FIELDS:
        variable = f"{ENV_PREFIX}{name.upper()}"
        path = os.environ.get(f"{variable}_FILE")
        if path and os.environ.get(variable):
            raise ValueError(f"{variable} and {variable}_FILE are both set: keep one")
        if path and values.get(name) is None:
            try:
                values[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()}_FILE: cannot read {path}: {exc}"
                ) from exc
    return values


PlanName = Literal["start", "build", "scale", "enterprise"]
# Bland's published self-serve caps (bland-api.md section 7): concurrent, per hour, per day.
# Enterprise has none of Bland's: our own defaults apply.
PLAN_CAPS: dict[str, tuple[int | None, int | None, int | None]] = {
    "start": (10, 100, 100),
    "build": (50, 1000, 2000),
    "scale": (100, 1000, 5000),
    "enterprise": (None, None, None),
}


class RegionRule(BaseModel):
    """A region's own rules (`US-FL`, `US`, `GB`): a stricter window, a stricter 24 h cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    calling_window: str | None = None
    max_calls_per_24h: int | None = Field(None, ge=0)

    @field_validator("calling_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


DEFAULT_REGION_RULES = {"US-FL": RegionRule(calling_window="08:00-20:00", max_calls_per_24h=3)}


class Settings(BaseSettings):
    """Every knob of the service; built once and passed explicitly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        populate_by_name=True,  # Settings(field=...) by name, also where an alias is declared
    )

    # Connections
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_heartbeat_s: int = Field(15, ge=0, le=600)
    database_url: SecretStr | None = None
    database_pool_size: int = Field(20, ge=1, le=500)
    data_dir: Path = Path("./var")
    prefix: str = Field("dialer", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Bland
    bland_api_key: SecretStr | None = None
    bland_base_url: str = "https://api.bland.ai"
    bland_connect_timeout_s: float = Field(3.0, gt=0)
    bland_read_timeout_s: float = Field(15.0, gt=0)
    bland_pool_size: int = Field(32, ge=1, le=1024)
    bland_keepalive_s: float = Field(2.0, ge=0)

    # Webhooks (ours)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None

    # HTTP app
    http_host: str = "0.0.0.0"  # noqa: S104 - a container service listens on every interface
    http_port: int = Field(8080, ge=0, le=65535)

    # Consumer
    prefetch: int = Field(64, ge=1, le=10_000)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    delivery_limit: int = Field(5, ge=1, le=1000)

    # Admission (the first, simple limits; the limits issue extends these)
    max_concurrent_calls: int = Field(10, ge=1)
    max_calls_per_second: float = Field(1.0, gt=0)
    slot_lease_s: float = Field(4 * 3600.0, gt=0)

    # Limits and compliance (README "Limits and compliance")
    plan: PlanName | None = None
    max_calls_per_hour: int = Field(0, ge=0)
    max_calls_per_day: int = Field(0, ge=0)
    smoothing_burst: int = Field(0, ge=0)
    same_number_gap_s: float = Field(10.0, ge=0)
    calling_window: str = "08:00-21:00"
    region_rules: dict[str, RegionRule] = Field(default_factory=lambda: dict(DEFAULT_REGION_RULES))
    max_calls_per_number_24h: int = Field(3, ge=0)
    pause_on_429_s: float = Field(2.0, gt=0)
    pace_floor: float = Field(0.1, gt=0, le=1)
    pace_recovery_s: float = Field(60.0, gt=0)

    # Dispatcher / outcomes
    dispatch_batch_size: int = Field(32, ge=1, le=1000)
    dispatch_idle_s: float = Field(0.2, gt=0)
    retry_backoff_base_s: float = Field(1.0, gt=0)
    retry_backoff_max_s: float = Field(60.0, gt=0)
    max_transient_retries: int = Field(8, ge=0)
    outcome_overdue_s: float = Field(60.0, gt=0)
    outcome_poll_every_s: float = Field(60.0, gt=0)
    webhook_grace_s: float = Field(60.0, ge=0)
    poll_interval_s: float = Field(5.0, gt=0)
    reconcile_grace_s: float = Field(600.0, gt=0)
    reconcile_interval_s: float = Field(10.0, gt=0)
    redial_unknown: bool = Field(
        True, validation_alias=AliasChoices("DIALER_REDIAL_UNKNOWN", "DIALER_REDIAL_ORPHANS")
    )
    max_unknown_redials: int = Field(1, ge=0, le=5)
    stale_claim_margin_s: float = Field(30.0, ge=0)
    publisher_webhook_timeout_s: float = Field(5.0, gt=0)

    # Batches
    batch_dispatch: Literal["expand", "bland"] = "expand"
    batch_settle_interval_s: float = Field(1.0, gt=0)
    bland_batch_chunk: int = Field(500, ge=1, le=10_000)
    bland_batches_api: Literal["v2", "v1"] = "v2"
    batch_poll_interval_s: float = Field(5.0, gt=0)
    coalesce_window_s: float = Field(0.0, ge=0, le=60)

    # Outbox relay
    outbox_batch_size: int = Field(256, ge=1, le=10_000)
    outbox_idle_s: float = Field(0.05, gt=0)

    # Retention (also the idempotency window: a purged request id is forgotten)
    retention_days: float = Field(30.0, gt=0)
    retention_interval_s: float = Field(300.0, gt=0)
    retention_chunk: int = Field(500, ge=1, le=10_000)

    # Lifecycle
    migrate_on_start: bool = True
    shutdown_grace_s: float = Field(25.0, gt=0)

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        return _read_secret_files(dict(data)) if isinstance(data, dict) else data

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(
                f"must be an amqp:// or amqps:// URL (got {scheme or 'no'} scheme), "
                "e.g. amqp://user:password@host:5672/vhost"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            return value
        if scheme.startswith("postgres"):
            raise ValueError(
                f"{scheme}:// needs a driver: use postgresql+asyncpg://user:password@host/db"
            )
        raise ValueError(
            f"unsupported scheme {scheme or '(none)'}://: use postgresql+asyncpg://... "
            "(or sqlite+aiosqlite:///path, or leave it unset for the SQLite file)"
        )

    @field_validator("calling_window")
    @classmethod
    def _calling_window(cls, value: str) -> str:
        parse_window(value)
        return value

    @model_validator(mode="after")
    def _plan_presets(self) -> Settings:
        """A plan fills each cap not set explicitly (0 = no cap of our own)."""
        if self.plan is None:
            return self
        concurrent, hourly, daily = PLAN_CAPS[self.plan]
        given = self.model_fields_set
        if concurrent is not None and "max_concurrent_calls" not in given:
            self.max_concurrent_calls = concurrent
        if hourly is not None and "max_calls_per_hour" not in given:
            self.max_calls_per_hour = hourly
        if daily is not None and "max_calls_per_day" not in given:
            self.max_calls_per_day = daily
        return self

    @field_validator("bland_base_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError("must be an http(s) URL, e.g. https://api.bland.ai")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL that Bland can reach")
        return value

    @property
    def database_dsn(self) -> str:
        """The SQLAlchemy URL; an SQLite file under `data_dir` when none is configured."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dialer.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        """True when the ledger is the embedded SQLite file."""
        return self.database_dsn.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise ConfigError naming each bad `DIALER_*` variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(err) for err in exc.errors())) from exc


def _problem(err: Any) -> str:
    """One validation error as `DIALER_NAME: what is wrong` (pydantic's prefix dropped)."""
    message = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:  # a model-level check names its variables itself
        return message
    field = ".".join(str(part) for part in err["loc"])
    return f"{ENV_PREFIX}{field.upper()}: {message}"


_DESCRIPTIONS: dict[str, str] = {
    "amqp_url": "RabbitMQ URL (amqp:// or amqps://).",
    "amqp_heartbeat_s": "AMQP heartbeat asked of the broker unless the URL sets `heartbeat`: a link that went silent is dropped and reconnected after about twice this (0: none).",
    "database_url": "Ledger URL: `postgresql+asyncpg://...` for replicas; unset = SQLite file in the data dir.",
    "database_pool_size": "Ledger connections per process (kept open; callers wait for one rather than open more). SQLite uses at most 2: it has one writer.",
    "data_dir": "Where the embedded SQLite ledger lives.",
    "prefix": "Name prefix of every exchange and queue (`dialer.requests`, `dialer.events`, `dialer.dead`).",
    "bland_api_key": "Bland API key, sent as `Authorization`.",
    "bland_base_url": "Bland API base URL (the sandbox's URL in tests and staging).",
    "bland_connect_timeout_s": "Connect timeout to Bland; a connect failure is retried (nothing was sent).",
    "bland_read_timeout_s": "Read timeout to Bland; a timeout after sending is an unknown outcome (reconciled, never redialed).",
    "bland_pool_size": "Connections kept to Bland.",
    "bland_keepalive_s": "An idle connection to Bland is closed after this long, well before a server drops it: a POST sent on a connection the server is closing at that moment has an unknown outcome.",
    "webhook_url": "This service's public `/webhooks/bland` URL, sent to Bland as each call's `webhook`; unset = outcomes by polling.",
    "webhook_secret": "Bland's webhook signing secret (HMAC-SHA256 over the raw body).",
    "http_host": "HTTP listen address (health, metrics, webhooks).",
    "http_port": "HTTP listen port.",
    "prefetch": "Unacked deliveries per consumer; requests are acked right after the ledger commit.",
    "max_body_bytes": "Larger request bodies are dead-lettered unread (`too_large`). 4 MiB holds a `batch.create` of well over 10,000 recipients of the seed's shape (about 100 bytes each); split larger batches.",
    "batch_dispatch": "How batch recipients are dialed unless the batch's `dialer.dispatch` says: `expand` (one `POST /v1/calls` each, under the service's limits) or `bland` (Bland's `POST /v2/batches/create`, chunked).",
    "bland_batch_chunk": "`bland` dispatch: most call objects in one `POST /v2/batches/create` (a claim round holds at most DIALER_DISPATCH_BATCH_SIZE recipients: raise both for big batches).",
    "bland_batches_api": "`bland` dispatch: `v2` (`POST /v2/batches/create`) or `v1`, the legacy `POST /v1/batches` for accounts that still use it (calls sharing all fields but number and task go together; their calls are matched back by number, their outcomes come from polls).",
    "batch_poll_interval_s": "`bland` dispatch: how often `GET /v1/calls?batch_id=` is asked for the calls of Bland batches whose recipients have no call id yet (lost webhooks); one not reported within DIALER_RECONCILE_GRACE_S is an unknown outcome, reconciled like a single call.",
    "coalesce_window_s": "Beyond Bland: single `call.create` requests claimed within this many seconds of each other go out together as one `POST /v2/batches/create` (what they share in `global`), cutting API requests; each call waits up to the window. 0 = off (each call its own `POST /v1/calls`).",
    "batch_settle_interval_s": "How often open batches are checked for completion (`batch.completed` once every recipient is final).",
    "delivery_limit": "Quorum-queue delivery limit before a poison message is dead-lettered.",
    "max_concurrent_calls": "Calls dialing or live at once, across all replicas.",
    "max_calls_per_second": "Dials started per second, across all replicas.",
    "slot_lease_s": "A concurrency slot whose outcome never arrives is freed after this long (at least the call's `max_duration` plus an hour).",
    "plan": "Bland plan preset (`start`, `build`, `scale`, `enterprise`): fills DIALER_MAX_CONCURRENT_CALLS, DIALER_MAX_CALLS_PER_HOUR and DIALER_MAX_CALLS_PER_DAY with the plan's published caps unless they are set.",
    "max_calls_per_hour": "Calls placed in any rolling hour, across all replicas (0: no cap).",
    "max_calls_per_day": "Calls placed in any rolling 24 h, across all replicas (0: no cap).",
    "smoothing_burst": "Spread the hourly cap over the hour: at most this many calls in any burst x 3600 / hourly-cap seconds (0: off).",
    "same_number_gap_s": "At least this long between two calls to the same number (Bland refuses a second call within 10 s); the second waits in the ledger.",
    "calling_window": "Local-time window of the called party, `HH:MM-HH:MM` (end exclusive; `00:00-24:00`: any time). Requests and regions can only narrow it.",
    "region_rules": "Per-region rules as JSON, keyed by ISO country (`US`, `GB`) or US state (`US-FL`): `calling_window`, `max_calls_per_24h`. The strictest applicable rule wins.",
    "max_calls_per_number_24h": "Calls to one number in any rolling 24 h, across all replicas; further requests end `call.suppressed` (`frequency_cap`). 0: no cap.",
    "pause_on_429_s": "A Bland 429 `Rate limit exceeded` pauses every replica's dialing at least this long (doubling while they continue); no retry budget is spent.",
    "pace_floor": "Repeated 429s halve the shared pace (the rate's factor) down to this floor.",
    "pace_recovery_s": "The pace climbs back from the floor to 1 over this long without a 429.",
    "dispatch_batch_size": "Rows claimed per dispatcher round.",
    "dispatch_idle_s": "Dispatcher sleep when nothing is due.",
    "retry_backoff_base_s": "First retry delay after a 429 or a connection failure.",
    "retry_backoff_max_s": "Longest retry delay.",
    "max_transient_retries": "Retries after connection failures before `call.failed` (429s do not count).",
    "outcome_overdue_s": "First look at a call's outcome with `GET /v1/calls/{id}` this long after it was queued, if no webhook settled it.",
    "outcome_poll_every_s": "Then look again this often while the call is live: at most about one GET per live call per this interval; a webhook ends the polls.",
    "webhook_grace_s": "A call a poll finds finished is settled from the poll only this long after it ended, so Bland's webhook (up to a minute late while `answered_by` is worked out) normally wins. Not applied without DIALER_WEBHOOK_URL.",
    "poll_interval_s": "How often the poller looks for calls whose next look is due.",
    "reconcile_grace_s": "How long after an attempt whose outcome is unknown Bland's list is trusted to show its call: the POST may still be processed after our client gave up (at most the POST deadline), Bland may queue calls briefly at high volume, and its list's lag is undocumented, so minutes, not seconds. Found → `call.queued`; absent after it → redialed or `call.unresolved` (DIALER_REDIAL_UNKNOWN).",
    "reconcile_interval_s": "How often unknown outcomes are reconciled.",
    "stale_claim_margin_s": "A `dialing` row older than the longest possible POST (timeouts) plus this margin was left by a dead process: it is reconciled as an orphan.",
    "redial_unknown": "One rule for every unknown outcome (a POST that failed after sending, or a claim left by a process that died): when Bland's complete list for the number, read after DIALER_RECONCILE_GRACE_S, shows no call carrying the request id, it is dialed again (at most DIALER_MAX_UNKNOWN_REDIALS times); otherwise `call.unresolved`. `false`: never redialed, always `call.unresolved`. (Old name: DIALER_REDIAL_ORPHANS.)",
    "max_unknown_redials": "How often one request may be redialed after unknown outcomes.",
    "publisher_webhook_timeout_s": "Timeout when relaying Bland's webhook to a publisher's own `webhook`.",
    "outbox_batch_size": "Events published per relay round.",
    "outbox_idle_s": "Relay sleep when the outbox is empty.",
    "retention_days": "Finished requests and sent events older than this are deleted. A request id is remembered this long: republished later, it is a new request (the idempotency window).",
    "retention_interval_s": "How often the retention purge runs.",
    "retention_chunk": "Rows deleted per purge transaction (small chunks never hold the write lock long).",
    "migrate_on_start": "Run the ledger migrations at start-up.",
    "shutdown_grace_s": "SIGTERM drains in-flight work within this time.",
    "log_level": "DEBUG, INFO, WARNING or ERROR.",
    "log_format": "`json`, `console`, or `auto` (console on a terminal).",
}


def settings_markdown() -> str:
    """The configuration table of the README, generated from the Settings fields."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = re.sub(r":[^:@/]+@", ":***@", default.get_secret_value())
        shown = "unset" if default is None else f"`{default}`"
        secret = " Readable from a file: `_FILE`." if name in SECRET_FIELDS else ""
        meaning = field.description or _DESCRIPTIONS.get(name, "")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {meaning}{secret} |")
    return "\n".join(rows) + "\n"
