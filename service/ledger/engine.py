"""The ledger's database engine: SQLite (WAL, explicit write lock) or PostgreSQL; error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.errors import ConfigError, StoreUnavailableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLite has one writer: more connections only sleep-poll for its lock (busy_timeout), which
# costs CPU and latency; two let a read proceed beside the write (WAL).
SQLITE_POOL_SIZE = 2


def make_engine(dsn: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for the ledger: SQLite (WAL, explicit write locks) or PostgreSQL."""
    url = make_url(dsn)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # No overflow: an overflow connection is closed on return, and under load the pool
        # then opens one per transaction (a thread and the pragmas each time for SQLite, a TCP
        # and TLS handshake plus re-prepared statements for PostgreSQL). Callers wait instead.
        size = min(pool_size, SQLITE_POOL_SIZE)
        engine = create_async_engine(url, pool_size=size, max_overflow=0, pool_timeout=30)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=10,
        isolation_level="READ COMMITTED",
        connect_args={"timeout": 10, "command_timeout": 30},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, busy timeout, foreign keys; BEGIN IMMEDIATE so the single writer is explicit."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a request is acked once committed, so a commit must survive a power loss.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("ledger_readonly", False)
        conn.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")


# PostgreSQL's answers no retry can cure: no such database, bad password, no such role.
_CONFIG_SQLSTATES = {
    "3D000": "the database does not exist (create it, or fix the URL's path)",
    "28P01": "the password was refused",
    "28000": "the user was refused (no such role, or pg_hba.conf does not admit it)",
}


def config_problem(exc: BaseException) -> ConfigError | None:
    """A database refusal no retry can cure, as a ConfigError naming DIALER_DATABASE_URL."""
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate not in _CONFIG_SQLSTATES:
        return None
    detail = str(exc.orig).splitlines()[0] if str(exc.orig) else sqlstate
    return ConfigError(f"DIALER_DATABASE_URL: {_CONFIG_SQLSTATES[sqlstate]}: {detail}")


# PostgreSQL's "try again" codes: serialization failure, deadlock detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | OSError):
        return True
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return exc.connection_invalidated or sqlstate in _RETRY_SQLSTATES
    return False


@asynccontextmanager
async def mapped_errors() -> AsyncIterator[None]:
    """Turn "the database cannot be reached" into StoreUnavailableError; other errors pass."""
    try:
        yield
    except IntegrityError:
        raise
    except Exception as exc:
        problem = config_problem(exc)
        if problem is not None:
            raise problem from exc
        if _is_unavailable(exc):
            raise StoreUnavailableError(f"ledger unavailable: {type(exc).__name__}: {exc}") from exc
        raise
