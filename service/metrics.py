"""Prometheus metrics (prefix `dialer_`) on a registry the composition root injects."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.envelope import REQUEST_KINDS
from schemas.events import EVENT_TYPES

_BLAND_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The limits a due request can wait on (the plan caps come with the limits work).
WAIT_REASONS = (
    "concurrency",
    "rate",
    "hourly",
    "daily",
    "smoothing",
    "bland_429",
    "same_number",
)
READY_CHECKS = ("database", "broker", "consumers")
DEAD_LETTER_REASONS = (
    "invalid_json", "invalid_encoding", "invalid_content_type", "too_large",
    "unreadable_properties", "unprocessable",
)  # fmt: skip
# Label values known in advance: their series exist (at 0) from the first scrape, so every
# dashboard panel and alert input has a series before the first event of its kind.
KNOWN_LABELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "requests_consumed": tuple(
        (kind, outcome)
        for kind in REQUEST_KINDS
        for outcome in ("accepted", "duplicate", "rejected", "dead_lettered", "canceled")
    ),
    "calls_dialed": tuple(
        (r,) for r in ("queued", "failed", "account_error", "throttled", "transient", "unknown")
    ),
    "bland_request_seconds": tuple(
        (endpoint, "2xx") for endpoint in ("create_call", "get_call", "list_calls", "stop_call")
    ),
    "limit_waits": tuple((r,) for r in WAIT_REASONS),
    "events_published": tuple((t,) for t in EVENT_TYPES),
    "webhooks": tuple(
        (r,) for r in ("accepted", "replay", "unknown_call", "bad_signature", "invalid")
    ),
    "compliance_blocks": tuple(
        (r,) for r in ("do_not_call", "frequency_cap", "no_calling_window", "no_time_zone")
    ),
    "dead_letters": tuple((r,) for r in DEAD_LETTER_REASONS),
    "reconciliations": tuple((r,) for r in ("matched", "requeued", "unresolved", "pending")),
    "webhook_relays": tuple((r,) for r in ("delivered", "refused", "error")),
    "events_unroutable": (("events",), ("reply_to",)),
    "call_stops": tuple((r,) for r in ("sent", "refused", "error")),
    "purged": (("requests",), ("events",)),
    "backlog_waiting": tuple((r,) for r in WAIT_REASONS),
    "ready": tuple((c,) for c in READY_CHECKS),
    "calls_deferred": (("calling_window",), ("same_number",)),
    "bland_429": (("rate_limit",), ("same_number",)),
}


class Metrics:
    """Every metric of the service, registered on one registry (tests pass their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_consumed = Counter(
            "dialer_requests_consumed_total",
            "Requests consumed from the broker, by kind and outcome "
            "(accepted, duplicate, rejected, dead_lettered, canceled).",
            ["kind", "outcome"],
            registry=r,
        )
        self.calls_dialed = Counter(
            "dialer_calls_dialed_total",
            "Dial attempts by result (queued, failed, account_error, throttled, transient, "
            "unknown, unrecorded).",
            ["result"],
            registry=r,
        )
        self.bland_request_seconds = Histogram(
            "dialer_bland_request_seconds",
            "Latency of requests to Bland's API, by endpoint and status class.",
            ["endpoint", "status"],
            buckets=_BLAND_BUCKETS_S,
            registry=r,
        )
        self.call_outcomes = Counter(
            "dialer_call_outcomes_total",
            "Final outcomes recorded, by state and Bland status.",
            ["state", "status"],
            registry=r,
        )
        self.active_calls = Gauge(
            "dialer_active_calls", "Calls holding a concurrency slot (dialing or live).", registry=r
        )
        self.backlog = Gauge(
            "dialer_backlog", "Requests in the ledger by state.", ["state"], registry=r
        )
        self.limit_waits = Counter(
            "dialer_limit_waits_total",
            "Times a due request waited on a limit (concurrency, rate, bland_429).",
            ["limit"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "dialer_outbox_pending",
            "Events written but not yet confirmed by the broker.",
            registry=r,
        )
        self.events_published = Counter(
            "dialer_events_published_total",
            "Events confirmed by the broker, by type.",
            ["event_type"],
            registry=r,
        )
        self.webhooks = Counter(
            "dialer_webhooks_total",
            "Webhooks received, by result (accepted, replay, bad_signature, unknown_call, invalid).",
            ["result"],
            registry=r,
        )
        self.compliance_blocks = Counter(
            "dialer_compliance_blocks_total",
            "Calls blocked by compliance, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "dialer_dead_letters_total",
            "Messages sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.reconciliations = Counter(
            "dialer_reconciliations_total",
            "Unknown dial outcomes reconciled, by result (matched, unresolved, pending).",
            ["result"],
            registry=r,
        )
        self.webhook_relays = Counter(
            "dialer_webhook_relays_total",
            "Bland webhooks relayed to a publisher's own webhook, by result (delivered, "
            "refused, error). Best effort: never retried, never delays Bland's 200.",
            ["result"],
            registry=r,
        )
        self.events_unroutable = Counter(
            "dialer_events_unroutable_total",
            "Events the broker returned as unroutable, by target (events: no queue bound; "
            "reply_to: the publisher's reply queue is missing). Marked sent, not retried.",
            ["target"],
            registry=r,
        )
        self.call_stops = Counter(
            "dialer_call_stops_total",
            "Stops of a canceled request's call asked of Bland, by result (sent: accepted, "
            "refused: e.g. SID not found, error: the request failed); retried until settled.",
            ["result"],
            registry=r,
        )
        self.purged = Counter(
            "dialer_purged_total",
            "Ledger rows deleted by retention, by kind (requests: finished requests older than "
            "DIALER_RETENTION_DAYS; events: sent outbox events as old).",
            ["kind"],
            registry=r,
        )
        self.ready = Gauge(
            "dialer_ready",
            "1 while a readiness check passes, 0 while it fails (database, broker, consumers), "
            "as /readyz reports.",
            ["check"],
            registry=r,
        )
        self.backlog_due = Gauge(
            "dialer_backlog_due",
            "Pending requests whose time has come (due now, dialed as the limits allow).",
            registry=r,
        )
        self.backlog_waiting = Gauge(
            "dialer_backlog_waiting",
            "Due requests held back, by the limit that held the dispatcher's last round "
            "(concurrency, rate; 0 for the others).",
            ["reason"],
            registry=r,
        )
        self.calls_deferred = Counter(
            "dialer_calls_deferred_total",
            "Requests that wait in the ledger for a compliance reason, by reason (calling_window: "
            "call.deferred until the window opens; same_number: held 10 s after a call to it).",
            ["reason"],
            registry=r,
        )
        self.bland_429 = Counter(
            "dialer_bland_429_total",
            "429 answers from Bland to POST /v1/calls, by kind (rate_limit: every replica pauses "
            "and the pace drops; same_number: only that request waits).",
            ["kind"],
            registry=r,
        )
        self.pace = Gauge(
            "dialer_pace_factor",
            "The shared pace (1 = the configured rate); repeated 429s halve it, quiet time restores it.",
            registry=r,
        )
        self.concurrency_cap = Gauge(
            "dialer_concurrency_cap",
            "DIALER_MAX_CONCURRENT_CALLS, to compare with dialer_active_calls.",
            registry=r,
        )
        self.rate_limit = Gauge(
            "dialer_rate_limit_calls_per_second",
            "The dial rate in force: DIALER_MAX_CALLS_PER_SECOND times the pace.",
            registry=r,
        )
        # The limit that held back the dispatcher's last round (None: nothing was held back).
        self.limited_by: str | None = None
        for name, values in KNOWN_LABELS.items():
            metric = getattr(self, name)
            for labels in values:
                metric.labels(*labels)
