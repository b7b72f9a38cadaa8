"""`dialer status` reports: what an operator reads, from an overview of the ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from service.commands.status import QueueDepth, report_json, report_text
from service.ledger.overview import Overview, RecentError
from service.ledger.states import State
from service.settings import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
VIEW = Overview(
    now=NOW,
    by_state={s.value: 0 for s in State} | {"pending": 7, "queued": 2, "completed": 40},
    due=3,
    active_slots=2,
    dials_last_s=1,
    dials_last_min=12,
    dials_last_hour=90,
    dials_last_day=400,
    outbox_pending=5,
    oldest_unsent_at=NOW - timedelta(seconds=4),
    recent_errors=[
        RecentError(NOW, "r-9", "failed", "bland_refused", '["Invalid phone number +15555550142"]')
    ],
)
QUEUES = [QueueDepth("dialer.requests", 4, 2), QueueDepth("dialer.dead", None, None, "refused")]
SETTINGS = Settings(max_concurrent_calls=10, max_calls_per_second=2, max_calls_per_hour=100)


def test_the_text_report_names_each_limit_and_masks_numbers() -> None:
    text = report_text(SETTINGS, VIEW, QUEUES)
    assert "backlog       pending 7 (3 due now)  dialing 0  queued 2  unknown 0" in text
    assert "finished      completed 40" in text
    assert "active calls  2 of 10 (DIALER_MAX_CONCURRENT_CALLS)" in text
    assert "1 in the last second (limit 2/s, DIALER_MAX_CALLS_PER_SECOND)" in text
    assert "90 in the last hour (cap 100, DIALER_MAX_CALLS_PER_HOUR)" in text
    assert "400 in the last day (cap none, DIALER_MAX_CALLS_PER_DAY)" in text
    assert "outbox        5 event(s) not yet confirmed by the broker, oldest 4.0 s old" in text
    assert "dialer.requests: 4 message(s), 2 consumer(s)" in text
    assert "dialer.dead: refused" in text
    assert "r-9 failed bland_refused" in text
    assert "+15555550142" not in text


def test_the_json_report_carries_the_same_figures() -> None:
    body = json.loads(report_json(SETTINGS, VIEW, QUEUES))
    assert body["backlog"]["pending"] == 7
    assert body["due"] == 3
    assert (body["active_calls"], body["max_concurrent_calls"]) == (2, 10)
    assert body["outbox_lag_s"] == 4.0
    assert body["last_errors"][0]["request_id"] == "r-9"
    assert "+15555550142" not in json.dumps(body)
