"""`make bench`: every variant in one run, interleaved over rounds; a table and a JSON file.

    python -m bench [--quick] [--rounds 5] [--requests 5000] [--backlog 100000] [--profile]

Throughput rows drain a preloaded queue; the ratio is to baseline B (the naive pipeline) of
the same round, so the machine's noise hits both alike (median [range] over rounds). The
rows measured once (latency, backlog, webhooks, limits, batches) carry their own ratios.
`BENCH_QUICK=1` or `--quick` is the CI smoke check: tiny counts, one round, nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import batches, limits, scenarios
from bench.capped import Options
from bench.common import Run, median_range
from bench.profiles import print_profiles
from bench.rig import Rig
from service.bus.connection import broker_answers

RAW, NAIVE = "A raw aio-pika drain", "B naive pipeline"
ROUND_VARIANTS = (
    "raw", "naive", "ingest-sqlite", "ingest-postgres", "e2e-sqlite", "e2e-postgres",
    "e2e2-postgres",  # two processes on one PostgreSQL
)  # fmt: skip


def variant(rig: Rig, key: str, count: int, args_before: list[str]) -> Callable[[], Awaitable[Run]]:
    """The coroutine factory of a round variant."""
    if key in ("raw", "naive"):
        return lambda: scenarios.baseline(rig, key, count)
    kind, database, *before = key.split("-")
    code_dir = Path(args_before[0]) if before and args_before else None
    replicas = 2 if kind == "e2e2" else 1
    return lambda: scenarios.drain(
        rig, database, count, dial=kind.startswith("e2e"), code_dir=code_dir, replicas=replicas
    )


async def rounds(rig: Rig, args: argparse.Namespace) -> list[list[Run]]:
    """Every round variant once per round, the order rotated each round."""
    keys = list(ROUND_VARIANTS)
    if args.before:
        keys += [f"{k}-before" for k in ROUND_VARIANTS if k.startswith(("ingest", "e2e-"))]
    keys = [k for k in keys if not args.only or k in args.only]
    done: list[list[Run]] = []
    for number in range(args.rounds if keys else 0):
        shift = number % len(keys)
        order = keys[shift:] + keys[:shift]
        runs = []
        for key in order:
            before = [args.before] if args.before else []
            run = await variant(rig, key, args.requests, before)()
            print(f"  round {number + 1}: {run.variant:34} {run.per_s:8.0f} /s", flush=True)
            runs.append(run)
        done.append(runs)
    return done


async def once(rig: Rig, args: argparse.Namespace, ingest_per_s: float) -> list[Run]:
    """Latency, backlog, webhook, limits and batches rows, measured once."""
    out: list[Run] = []

    def wanted(key: str) -> bool:
        return not args.only or key in args.only

    seconds = 2.0 if args.quick else 20.0
    versions = [("", None)] + ([("-before", Path(args.before))] if args.before else [])
    for database in ("sqlite", "postgres"):
        for rate in (50.0, 200.0):
            for suffix, code_dir in versions:
                if wanted(f"latency-{database}{suffix}"):
                    out.append(await scenarios.latency(rig, database, rate, seconds, code_dir))
                    print_progress(out[-1])
    if wanted("backlog"):
        out.append(await scenarios.backlog(rig, "sqlite", args.backlog, ingest_per_s))
        print_progress(out[-1])
    if wanted("webhooks"):
        out.append(await scenarios.webhooks(rig, "sqlite", args.requests))
        print_progress(out[-1])
    return out + await limits_and_batches(rig, args)


async def limits_and_batches(rig: Rig, args: argparse.Namespace) -> list[Run]:
    """The limits row (its own capped sandbox, replicas on PostgreSQL) and the batches rows."""
    out: list[Run] = []
    if not args.only or "limits" in args.only:
        replicas = 2 if args.quick else 3
        options = Options(
            args.limits_requests, replicas, amqp_url=args.amqp_url, postgres_url=args.postgres_url
        )
        out.append(limits.as_run(await limits.measure(options, rig.directory)))
        print_progress(out[-1])
    if not args.only or "batches" in args.only:
        figures = await batches.measure(rig, args.batch_calls, args.batch_recipients)
        for each in batches.as_runs(figures):
            out.append(each)
            print_progress(each)
    return out


def print_progress(run: Run) -> None:
    """One line as a variant finishes."""
    print(f"  {run.variant:42} {run.per_s:8.0f} /s {json.dumps(run.extra)}", flush=True)


def summarize(done: list[list[Run]]) -> list[dict[str, Any]]:
    """Per variant: median [range] of throughput and of its ratio to B in the same round."""
    by_name: dict[str, list[tuple[Run, float | None]]] = {}
    for runs in done:
        naive = next((r for r in runs if r.variant == NAIVE), None)
        for run in runs:
            ratio = run.per_s / naive.per_s if naive is not None and naive.per_s else None
            by_name.setdefault(run.variant, []).append((run, ratio))
    rows = []
    for name, pairs in by_name.items():
        rates = [r.per_s for r, _ in pairs]
        cpus = [r.cpu_per_1000 for r, _ in pairs if r.cpu_per_1000 is not None]
        peaks = [r.peak_rss_mib for r, _ in pairs if r.peak_rss_mib is not None]
        ratios = [x for _, x in pairs if x is not None]
        rows.append(
            {
                "variant": name,
                "per_s": median_range(rates),
                "cpu_s_per_1000": statistics.median(cpus) if cpus else None,
                "peak_rss_mib": max(peaks) if peaks else None,
                "ratio_to_b": median_range(ratios) if ratios else None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], singles: list[Run], raw_per_s: float | None) -> str:
    """The Markdown table printed and put in the README."""
    lines = [
        "| variant | per second, median [range] | CPU s / 1,000 | peak RSS MiB | x baseline B |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        med, low, high = row["per_s"]
        ratio = row["ratio_to_b"]
        ratio_text = "-" if ratio is None else f"{ratio[0]:.2f} [{ratio[1]:.2f}-{ratio[2]:.2f}]"
        if row["variant"].startswith("ours ingest") and raw_per_s:
            ratio_text += f" ({med / raw_per_s:.2f} x A)"
        lines.append(
            f"| {row['variant']} | {med:,.0f} [{low:,.0f}-{high:,.0f}] | "
            f"{fmt(row['cpu_s_per_1000'])} | {fmt(row['peak_rss_mib'], 0)} | {ratio_text} |"
        )
    for run in singles:
        lines.append(single_row(run))
    return "\n".join(lines)


def single_row(run: Run) -> str:
    """A row measured once: latency, backlog, webhooks, limits or batches."""
    if "summary" in run.extra:
        what = str(run.extra["summary"])
    elif "p50_ms" in run.extra:
        what = f"p50 {run.extra['p50_ms']:.0f} ms / p99 {run.extra['p99_ms']:.0f} ms"
    elif "rss_start_mib" in run.extra:
        e = run.extra
        costs = ", ".join(
            f"{int(k):,}: {v:.2f}" for k, v in e["cpu_ms_per_request_at_pending"].items()
        )
        what = (
            f"{run.per_s:,.0f}/s; RSS {fmt(e['rss_start_mib'], 0)} -> "
            f"{fmt(e['rss_after_ingest_mib'], 0)} -> {fmt(e['rss_after_drain_mib'], 0)} MiB; "
            f"CPU ms/request at pending {costs}"
        )
    else:
        what = f"{run.per_s:,.0f}"
    return f"| {run.variant} | {what} | {fmt(run.cpu_per_1000)} | {fmt(run.peak_rss_mib, 0)} | - |"


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure or a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def machine() -> str:
    """The machine in one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


async def run(args: argparse.Namespace) -> int:
    """Every variant against one broker, one PostgreSQL server and one sandbox."""
    if not await broker_answers(args.amqp_url):
        print(f"bench: no broker at {args.amqp_url}", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="dialer-bench-"))
    rig = Rig.start(args.amqp_url, args.postgres_url, directory, args.profile)
    try:
        done = await rounds(rig, args)
        rows = summarize(done)
        ingest = [r["per_s"][0] for r in rows if r["variant"] == "ours ingest, SQLite"]
        singles = await once(rig, args, ingest[0] if ingest else 200.0)
    finally:
        rig.stop()
    raw = next((r["per_s"][0] for r in rows if r["variant"] == RAW), None)
    text = table(rows, singles, raw)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {machine()}, {args.requests:,} requests x {args.rounds} round(s)\n")
    print(text)
    write_json(args, stamp, rows, singles, done)
    if args.profile:
        print_profiles(directory)
    print(f"\nlogs in {directory}")
    return 0


def write_json(
    args: argparse.Namespace,
    stamp: str,
    rows: list[dict[str, Any]],
    singles: list[Run],
    done: list[list[Run]],
) -> None:
    """Everything measured, for later comparison."""
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": stamp,
        "machine": machine(),
        "quick": args.quick,
        "requests": args.requests,
        "rounds": [[asdict(r) for r in runs] for runs in done],
        "summary": rows,
        "once": [asdict(r) for r in singles],
    }
    path.write_text(json.dumps(document, indent=2))
    print(f"\nJSON: {path}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; quick mode shrinks the counts."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--backlog", type=int)
    parser.add_argument(
        "--only", nargs="*", help="variant keys (e.g. e2e-sqlite latency-sqlite limits batches)"
    )
    parser.add_argument("--limits-requests", type=int, help="calls through the capped sandbox")
    parser.add_argument("--batch-calls", type=int, help="calls per dispatch mode (batches)")
    parser.add_argument("--batch-recipients", type=int, help="recipients of the big batch")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "DIALER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--json", default="var/bench/latest.json")
    parser.add_argument(
        "--before",
        help="a checkout of an earlier version: its ingest and end-to-end rows join the rounds",
    )
    parser.add_argument("--profile", action="store_true", help="services under cProfile")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.requests = args.requests or (200 if args.quick else 5000)
    args.backlog = args.backlog or (1500 if args.quick else 100_000)
    args.limits_requests = args.limits_requests or (60 if args.quick else 2000)
    args.batch_calls = args.batch_calls or (100 if args.quick else 1000)
    args.batch_recipients = args.batch_recipients or (1000 if args.quick else 10_000)
    return args


def main() -> int:
    """Parse options and run."""
    return asyncio.run(run(parse()))
