"""Every metric has its series from the first scrape, so no panel or alert waits for data."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.http import set_gauges, set_readiness
from service.ledger import LedgerCounts
from service.metrics import WAIT_REASONS, Metrics

# call_outcomes: its `status` label is Bland's call status, not known in advance; backlog:
# every state is set from the ledger at each scrape (tests/e2e/test_metrics_table.py).
OPEN_LABELS = {"dialer_call_outcomes", "dialer_backlog"}


def _samples(metrics: Metrics) -> dict[str, list[dict[str, str]]]:
    text = generate_latest(metrics.registry).decode()
    return {
        f.name: [s.labels for s in f.samples if not s.name.endswith("_created")]
        for f in text_string_to_metric_families(text)
        if not f.name.endswith("_created")
    }


def test_every_metric_has_a_series_before_anything_happens() -> None:
    samples = _samples(Metrics())
    empty = {name for name, series in samples.items() if not series} - OPEN_LABELS
    assert empty == set()
    assert {"dialer_ready", "dialer_backlog_due", "dialer_backlog_waiting"} <= set(samples)


def test_due_work_is_reported_under_the_limit_that_held_it_back() -> None:
    metrics = Metrics()
    counts = LedgerCounts(by_state={"pending": 7}, outbox_pending=0, active_slots=3, due=5)
    metrics.limited_by = "rate"
    set_gauges(metrics, counts)
    waiting = {r: metrics.backlog_waiting.labels(r)._value.get() for r in WAIT_REASONS}
    assert waiting == {r: (5.0 if r == "rate" else 0.0) for r in WAIT_REASONS}
    assert metrics.backlog_due._value.get() == 5.0
    metrics.limited_by = None
    set_gauges(metrics, counts)
    assert metrics.backlog_waiting.labels("rate")._value.get() == 0.0


def test_readiness_is_one_per_passing_check() -> None:
    metrics = Metrics()
    set_readiness(metrics, {"database": "ok", "broker": "not answering", "consumers": "ok"})
    values = {c: metrics.ready.labels(c)._value.get() for c in ("database", "broker", "consumers")}
    assert values == {"database": 1.0, "broker": 0.0, "consumers": 1.0}


def test_the_metric_set_of_design_section_7_is_registered() -> None:
    design = {
        "dialer_requests_consumed",  # requests consumed by outcome
        "dialer_calls_dialed",  # calls dialed by result
        "dialer_bland_request_seconds",  # Bland request latency histogram
        "dialer_call_outcomes",  # call outcomes
        "dialer_active_calls",  # active calls
        "dialer_backlog",  # backlog by state
        "dialer_limit_waits",  # limit waits
        "dialer_outbox_pending",  # outbox pending
        "dialer_webhooks",  # webhooks by result
        "dialer_compliance_blocks",  # compliance blocks by reason
        "dialer_dead_letters",  # dead letters
    }
    assert design <= set(_samples(Metrics()))
