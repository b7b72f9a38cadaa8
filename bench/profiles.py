"""cProfile files of the measured services: own time grouped by component, top functions."""

from __future__ import annotations

import pstats
import re
from pathlib import Path

# Where a function's file lives → the component it is counted under (first match wins).
COMPONENTS = (
    ("service/ledger", "ledger (ours)"),
    ("service/", "service (ours, other)"),
    ("consumers/", "consumer (ours)"),
    ("schemas/", "schemas (ours)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("aiosqlite", "aiosqlite"),
    ("sqlite3", "sqlite3"),
    ("asyncpg", "asyncpg"),
    ("httpx", "httpx/httpcore"),
    ("httpcore", "httpx/httpcore"),
    ("h11", "httpx/httpcore"),
    ("aio_pika", "aio-pika/aiormq/pamqp"),
    ("aiormq", "aio-pika/aiormq/pamqp"),
    ("pamqp", "aio-pika/aiormq/pamqp"),
    ("structlog", "logging"),
    ("logging", "logging"),
    ("pydantic", "pydantic"),
    ("json", "json"),
    ("asyncio", "event loop"),
    ("selectors", "event loop"),
    ("uvicorn", "uvicorn/starlette"),
    ("starlette", "uvicorn/starlette"),
)


def component(filename: str) -> str:
    """The component of a source file."""
    if filename == "~":
        return "builtins (C)"
    for needle, name in COMPONENTS:
        if needle in filename:
            return name
    return "other"


def grouped(path: Path) -> list[tuple[str, float]]:
    """Own time per component, largest first, as shares of the whole."""
    stats = pstats.Stats(str(path))
    totals: dict[str, float] = {}
    raw = stats.stats  # type: ignore[attr-defined]  # pstats keeps its table untyped
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        key = component(filename)
        if key == "builtins (C)" and re.search(r"select|epoll|poll", name):
            key = "event loop"
        totals[key] = totals.get(key, 0.0) + tottime
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


def print_profiles(directory: Path, top: int = 15) -> None:
    """For each profile written: shares per component and the top functions by own time."""
    for path in sorted(directory.glob("*.prof")):
        print(f"\nprofile {path.name}: own time by component")
        for name, share in grouped(path)[:12]:
            print(f"  {share:6.1%}  {name}")
        stats = pstats.Stats(str(path))
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
