"""The benchmark suite's pure parts: percentiles, backlog cost, the table, limits and batches."""

from __future__ import annotations

from bench import batches, limits
from bench.capped import Options, Samples
from bench.common import Run, percentile
from bench.limits import Processes, Seen
from bench.scenarios import cost_at_levels
from bench.suite import parse, summarize, table


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_cost_at_levels_reads_cpu_per_request_where_the_backlog_was() -> None:
    # 2 ms per request while 2,000 were pending, then 1 ms from 1,000 pending on.
    samples = [
        (float(d), d * 0.002 if d <= 1000 else 2.0 + (d - 1000) * 0.001) for d in range(0, 2001, 50)
    ]
    costs = cost_at_levels(samples, 2000)
    assert set(costs) == {"1000"}
    assert abs(costs["1000"] - 1.0) < 1e-9


def test_ratios_are_to_baseline_b_of_the_same_round() -> None:
    rounds = [
        [Run("B naive pipeline", 100, 1.0, 0.1, 40.0), Run("ours", 100, 0.5, 0.2, 90.0)],
        [Run("B naive pipeline", 100, 2.0, 0.1, 40.0), Run("ours", 100, 2.0, 0.2, 95.0)],
    ]
    rows = {row["variant"]: row for row in summarize(rounds)}
    assert rows["ours"]["ratio_to_b"] == (1.5, 1.0, 2.0)
    assert rows["ours"]["peak_rss_mib"] == 95.0
    text = table(list(rows.values()), [], None)
    assert "| ours | 125 [50-200] | 2.00 | 95 | 1.50 [1.00-2.00] |" in text


def test_once_rows_with_a_summary_print_it_and_no_ratio_to_b() -> None:
    run = Run("limits: 3 replicas", 100, 20.0, 2.0, 90.0, {"summary": "5.00 calls/s; at cap 72 %"})
    assert table([], [run], None).splitlines()[-1] == (
        "| limits: 3 replicas | 5.00 calls/s; at cap 72 % | 20.00 | 90 | - |"
    )


def test_limits_figures_are_ratios_to_the_caps() -> None:
    samples = Samples(waiting_at_cap=72, waiting=100, idle_slot_s=4.0, busy_slot_s=96.0)
    calls: list[dict[str, object]] = [
        {"created_at": f"2026-12-02T15:00:{i // 5:02d}.{i % 5 * 2}00000+00:00"} for i in range(100)
    ]
    seen = Seen({"max_active": 10}, calls, [{"status_code": 200}])
    figures = limits.figures(Options(requests=100), 20.0, samples, seen, Processes(1.0, 80.0))
    assert figures["achieved_over_configured"] == 0.25
    assert figures["violations"] == 0
    assert figures["busiest_1s_calls"] == 5
    assert figures["lost_ms_per_call"] == 40.0
    run = limits.as_run(figures)
    assert run.per_s == 5.0
    assert run.cpu_per_1000 == 10.0
    assert (
        "achieved/configured 25 %, achieved/bound 88 %, utilisation 96.0 %" in run.extra["summary"]
    )
    assert "at cap 72 %, violations 0 (429s 0), lost 40 ms/call" in run.extra["summary"]


def test_batches_rows_are_api_requests_per_1000_against_single_calls() -> None:
    rows = [
        batches.Row("single call.create (baseline)", 1000, 1000, 0, 10.0, 5.0, 100.0),
        batches.Row("batch.create, bland (32 per round)", 1000, 0, 34, 5.0, 2.0, 100.0),
    ]
    intake = batches.Ended("", 4.0, 3.0, 120.0)
    runs = batches.as_runs(batches.Figures(rows, 10_000, 1024 * 1024, intake, 0.04))
    assert [r.extra["summary"] for r in runs] == [
        "100 calls/s; 1,000 API requests per 1,000 calls (100.0 % of single)",
        "200 calls/s; 34 API requests per 1,000 calls (3.4 % of single)",
        "2,500 recipients/s; publish -> batch.accepted 4.00 s, raw aio-pika 0.04 s (100x)",
    ]
    assert runs[2].variant == "batches: batch.create of 10,000 recipients (1,024 KiB)"


def test_quick_mode_shrinks_the_limits_and_batches_counts() -> None:
    args = parse(["--quick", "--only", "limits", "batches"])
    assert (args.limits_requests, args.batch_calls, args.batch_recipients) == (60, 100, 1000)
    assert parse([]).limits_requests == 2000
