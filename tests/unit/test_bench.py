"""The benchmark suite's pure parts: percentiles, cost per request by backlog, the table."""

from __future__ import annotations

from bench.common import Run, percentile
from bench.scenarios import cost_at_levels
from bench.suite import summarize, table


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
