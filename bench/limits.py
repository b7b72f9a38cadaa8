"""Three `dialer serve` replicas on one PostgreSQL against a capped sandbox: limits as one.

    python -m bench.limits [--requests 2000] [--replicas 3] [--concurrency 10] [--rate 20]

The sandbox refuses (429) any call beyond `--concurrency` live calls; calls last 0.5-3 s.
Prints: the sandbox's highest concurrency and most calls started in any 1-second window
(violations: above the caps, 429s), the share of time the sandbox ran at the cap while
requests waited, the achieved rate against the configured rate and against the concurrency
bound (cap / mean call length: the baseline no limiter can beat), and the slot time lost
per call between one call's end and the next call's start (the limiter's added latency).
`make bench` runs it as its "limits" row (bench/suite.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import capped
from bench.capped import Options, Samples
from bench.common import Run, cpu_seconds, memory_mib, postgres_admin, publish
from sandbox.process import start_sandbox
from service.bus.connection import broker_answers
from service.bus.topology import delete_topology


@dataclass
class Seen:
    """What the sandbox recorded: its counters, its calls, every POST it answered."""

    counts: dict[str, object]
    calls: list[dict[str, object]]
    tried: list[dict[str, object]]


@dataclass
class Processes:
    """What the replicas cost while the calls were placed: CPU summed, the largest peak RSS."""

    cpu_s: float | None = None
    peak_rss_mib: float | None = None


async def measure(options: Options, directory: Path) -> dict[str, Any]:
    """Start everything, publish, measure, stop and clean up; the figures."""
    keys = (secrets.token_hex(8), secrets.token_hex(16))
    sandbox = start_sandbox(
        directory, keys[0], keys[1], capped.sandbox_options(options.concurrency)
    )
    ledger_url, name = await capped.create_database(options.postgres_url)
    prefix = f"bench-limits-{uuid.uuid4().hex[:8]}"
    replicas: list[tuple[subprocess.Popen[bytes], dict[str, str]]] = []
    cost = Processes()
    try:
        for n in range(options.replicas):
            env = capped.replica_env(options, sandbox, ledger_url, prefix, keys)
            replicas.append((capped.start_replica(env, directory, n), env))
        for process, env in replicas:
            await capped.wait_http(
                f"http://127.0.0.1:{env['DIALER_HTTP_PORT']}/readyz", process, 90
            )
        bodies = [
            json.dumps({"phone_number": f"+1212{2_000_000 + i:07d}", "task": "Bench."}).encode()
            for i in range(options.requests)
        ]
        cpu_before = total_cpu_s([p.pid for p, _ in replicas])
        await publish(options.amqp_url, f"{prefix}.requests", "call.create", bodies)
        samples = Samples()
        elapsed_s = await capped.sample(
            sandbox, ledger_url, options.requests, options.concurrency, samples
        )
        cpu_after = total_cpu_s([p.pid for p, _ in replicas])
        if cpu_before is not None and cpu_after is not None:
            cost.cpu_s = cpu_after - cpu_before
        peaks = [memory_mib(p.pid, "VmHWM") for p, _ in replicas]
        cost.peak_rss_mib = max((p for p in peaks if p is not None), default=None)
        async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as client:
            counts = (await client.get("/_sandbox/counts")).json()
            calls = (await client.get("/_sandbox/calls")).json()["calls"]
            tried = (await client.get("/_sandbox/requests")).json()["requests"]
    finally:
        for process, _ in replicas:
            process.send_signal(signal.SIGTERM)
        for process, _ in replicas:
            await asyncio.to_thread(process.wait, 60)
        sandbox.stop()
        await delete_topology(options.amqp_url, prefix)
        if options.keep_database:
            print(f"ledger kept: {ledger_url}")
        else:
            await postgres_admin(
                options.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
    return figures(options, elapsed_s, samples, Seen(counts, calls, tried), cost)


def total_cpu_s(pids: list[int]) -> float | None:
    """The processes' CPU seconds so far (None if one cannot be read)."""
    seconds = [cpu_seconds(pid) for pid in pids]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def figures(
    options: Options, elapsed_s: float, samples: Samples, seen: Seen, cost: Processes
) -> dict[str, Any]:
    """Every figure and ratio of one run, by name."""
    refused = sum(1 for t in seen.tried if t.get("status_code") == 429)
    mean_call_s = (capped.MIN_TALK_S + capped.MAX_TALK_S) / 2 / capped.CLOCK_SPEED
    bound_per_s = min(options.rate_per_s, options.concurrency / mean_call_s)
    achieved_per_s = len(seen.calls) / elapsed_s
    busiest = capped.busiest_second([str(c["created_at"]) for c in seen.calls])
    max_active = int(str(seen.counts.get("max_active", 0)))
    over_cap = max_active > options.concurrency
    waiting = samples.waiting
    used_slot_s = samples.busy_slot_s + samples.idle_slot_s
    return {
        "replicas": options.replicas,
        "requests": options.requests,
        "calls": len(seen.calls),
        "seconds": elapsed_s,
        "concurrency_cap": options.concurrency,
        "max_active": max_active,
        "rate_configured_per_s": options.rate_per_s,
        "busiest_1s_calls": busiest,
        "refused_429": refused,
        "violations": refused + int(over_cap) + int(busiest > options.rate_per_s),
        "samples": waiting,
        "at_cap_share": samples.waiting_at_cap / waiting if waiting else 0.0,
        "ledger_at_cap_share": samples.ledger_at_cap / waiting if waiting else 0.0,
        "utilisation_share": samples.busy_slot_s / max(1e-9, used_slot_s),
        "achieved_per_s": achieved_per_s,
        "achieved_over_configured": achieved_per_s / options.rate_per_s,
        "bound_per_s": bound_per_s,
        "achieved_over_bound": achieved_per_s / bound_per_s,
        "lost_ms_per_call": samples.idle_slot_s / max(1, len(seen.calls)) * 1000,
        "cpu_s": cost.cpu_s,
        "peak_rss_mib": cost.peak_rss_mib,
    }


def report(f: dict[str, Any]) -> None:
    """Print the figures and the ratios."""
    print(f"replicas x requests          {f['replicas']} x {f['requests']} (one PostgreSQL)")
    print(f"calls placed                 {f['calls']} in {f['seconds']:.1f} s")
    print(f"highest concurrency (cap)    {f['max_active']} ({f['concurrency_cap']})")
    print(
        f"busiest 1-second window      {f['busiest_1s_calls']} calls "
        f"({f['rate_configured_per_s']:g}/s configured)"
    )
    print(f"429s from the sandbox        {f['refused_429']}")
    print(f"violations                   {f['violations']}")
    print(
        f"at the cap while work waited {f['at_cap_share']:8.1%} of {f['samples']} samples (sandbox)"
    )
    print(f"  the ledger's slots at cap  {f['ledger_at_cap_share']:8.1%} (held from dial to outcome)")  # fmt: skip
    print(
        f"concurrency utilisation      {f['utilisation_share']:8.1%} "
        "(slot-seconds in use / available)"
    )
    print(
        f"achieved / configured rate   {f['achieved_over_configured']:8.1%} "
        f"({f['achieved_per_s']:.2f} calls/s)"
    )
    print(
        f"achieved / concurrency bound {f['achieved_over_bound']:8.1%} "
        f"(bound {f['bound_per_s']:.2f} calls/s)"
    )
    print(
        f"slot time lost per call      {f['lost_ms_per_call']:8.1f} ms (the limiter's added latency)"
    )


def as_run(f: dict[str, Any]) -> Run:
    """The figures as a row of `make bench`: calls per second and the row's own ratios."""
    name = (
        f"limits: {f['replicas']} replicas, one PostgreSQL, cap {f['concurrency_cap']} "
        f"live / {f['rate_configured_per_s']:g} per s"
    )
    summary = (
        f"{f['achieved_per_s']:.2f} calls/s; achieved/configured "
        f"{percent(f['achieved_over_configured'])}, achieved/bound "
        f"{percent(f['achieved_over_bound'])}, utilisation {percent(f['utilisation_share'], 1)}, "
        f"at cap {percent(f['at_cap_share'])}, violations {f['violations']} "
        f"(429s {f['refused_429']}), lost {f['lost_ms_per_call']:.0f} ms/call"
    )
    extra = {**f, "summary": summary}
    return Run(name, f["calls"], f["seconds"], f["cpu_s"], f["peak_rss_mib"], extra)


def percent(share: float, digits: int = 0) -> str:
    """A share as "28 %"."""
    return f"{share * 100:.{digits}f} %"


async def run(options: Options) -> int:
    """The standalone command: measure and print."""
    if not await broker_answers(options.amqp_url):
        print(f"bench: no broker at {options.amqp_url}", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="dialer-bench-limits-"))
    report(await measure(options, directory))
    print(f"\nlogs in {directory}")
    return 0


def main() -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--amqp-url", default=capped.AMQP_URL)
    parser.add_argument("--keep-database", action="store_true", help="keep the ledger to inspect")
    parser.add_argument("--postgres-url", default=capped.POSTGRES_URL)
    args = parser.parse_args()
    options = Options(
        args.requests, args.replicas, args.concurrency, args.rate,
        args.amqp_url, args.postgres_url, args.keep_database,
    )  # fmt: skip
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
