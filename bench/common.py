"""What every benchmark variant shares: bodies, publishing, process figures, PostgreSQL scratch."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg

AREA_CODES = ("212", "312", "415", "617", "202", "305", "503", "702", "206", "404")
COUNTER_RE = r"^{name}\{{[^}}]*{label}[^}}]*\}} ([0-9.e+]+)$"
PUBLISH_CHUNK = 1000
# A task of ~1 KB, as the measurements used.
TASK = "Benchmark call: confirm the appointment, answer questions briefly. " * 14


@dataclass
class Run:
    """One measured run of one variant."""

    variant: str
    count: int
    seconds: float
    cpu_s: float | None
    peak_rss_mib: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        """Throughput."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_1000(self) -> float | None:
        """CPU seconds of the measured process per 1,000 items."""
        return None if self.cpu_s is None else self.cpu_s * 1000 / self.count


def numbers(count: int) -> list[str]:
    """Fictional numbers; they repeat, so the sandbox's same-number window is off."""
    return [f"+1{AREA_CODES[(i // 100) % 10]}55501{i % 100:02d}" for i in range(count)]


def bodies(count: int, dialer: dict[str, Any] | None = None) -> list[bytes]:
    """`call.create` bodies of ~1 KB; `dialer` options added when given."""
    out = []
    for number in numbers(count):
        body: dict[str, Any] = {"phone_number": number, "task": TASK}
        if dialer:
            body["dialer"] = dialer
        out.append(json.dumps(body).encode())
    return out


async def publish(
    url: str, exchange_name: str, routing_key: str, payloads: Sequence[bytes]
) -> list[str]:
    """Publish persistent messages with confirms, a chunk in flight at once; their ids."""
    ids = [uuid.uuid4().hex for _ in payloads]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = (
            channel.default_exchange
            if not exchange_name
            else await channel.get_exchange(exchange_name, ensure=False)
        )
        for start in range(0, len(payloads), PUBLISH_CHUNK):
            await asyncio.gather(
                *(
                    exchange.publish(message(body, ids[start + i]), routing_key=routing_key)
                    for i, body in enumerate(payloads[start : start + PUBLISH_CHUNK])
                )
            )
    return ids


def message(body: bytes, message_id: str) -> aio_pika.Message:
    """A persistent JSON message."""
    return aio_pika.Message(
        body,
        message_id=message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def counter(metrics: str, name: str, label: str = "") -> float:
    """The sum of a counter's series whose labels contain `label` (Prometheus text)."""
    pattern = COUNTER_RE.format(name=re.escape(name), label=re.escape(label))
    return sum(float(v) for v in re.findall(pattern, metrics, flags=re.MULTILINE))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int, key: str = "VmRSS") -> float | None:
    """A memory line of /proc/<pid>/status in MiB (VmRSS now, VmHWM the peak), else None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of non-empty values."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


async def postgres_admin(base_url: str, sql: str) -> None:
    """Run one statement on the server's `postgres` database (CREATE/DROP DATABASE)."""
    parts = urlsplit(base_url.replace("postgresql+asyncpg", "postgresql"))
    conn = await asyncpg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def database_url(base_url: str, name: str) -> str:
    """The URL of database `name` on the server of `base_url`."""
    return urlsplit(base_url)._replace(path=f"/{name}").geturl()
