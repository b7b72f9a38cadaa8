"""What crosses the ledger's interface: frozen records in and out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas.envelope import DialerOptions


@dataclass(frozen=True)
class NewCall:
    """A validated call request to write into the ledger."""

    request_id: str
    correlation_id: str | None
    reply_to: str | None
    phone_number: str  # E.164
    body: dict[str, Any]  # the Bland /v1/calls body to POST (no `dialer` key)
    options: DialerOptions
    publisher_webhook: str | None
    batch_request_id: str | None = None
    recipient_index: int | None = None
    dispatch: str | None = None  # "bland": sent in Bland's batches; else POST /v1/calls


@dataclass(frozen=True)
class RejectedRecipient:
    """A recipient of a batch request that will not be dialed, and why."""

    request_id: str
    index: int
    phone_number: str | None
    errors: list[str]


@dataclass(frozen=True)
class NewBatch:
    """A batch request split into its recipients: calls to write and recipients rejected."""

    batch_request_id: str
    correlation_id: str | None
    reply_to: str | None
    shape: str  # legacy, v2
    dispatch: str  # expand, bland
    test_mode: bool
    calls: list[NewCall]
    rejected: list[RejectedRecipient]

    @property
    def size(self) -> int:
        """Recipients taken, valid or not."""
        return len(self.calls) + len(self.rejected)


@dataclass(frozen=True)
class BatchAcceptance:
    """What accept_batch did: recipients written now, or the whole batch known already."""

    duplicate: bool
    recipients: int
    rejected: int


@dataclass(frozen=True)
class BatchCancel:
    """What cancel_batch did: pending recipients canceled, live calls to stop, Bland batches."""

    found: bool
    canceled: int = 0
    to_stop: list[CallToStop] = field(default_factory=list)
    bland_batch_ids: list[str] = field(default_factory=list)
    batch_request_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    """What accept_calls did with one request."""

    request_id: str
    state: str
    duplicate: bool


@dataclass(frozen=True)
class Claim:
    """A request claimed for dialing: its attempt is committed before the POST."""

    request_id: str
    attempt_id: int
    attempt_no: int
    phone_number: str
    body: dict[str, Any]
    correlation_id: str | None
    reply_to: str | None
    publisher_webhook: str | None
    started_at: datetime
    batch_request_id: str | None = None
    options: DialerOptions = field(default_factory=DialerOptions)
    recipient_index: int | None = None
    dispatch: str | None = None


@dataclass(frozen=True)
class CancelResult:
    """What cancel found; `call_id` is set when the call must also be stopped at Bland."""

    found: bool
    state: str | None = None
    call_id: str | None = None
    request_id: str | None = None
    changed: bool = False


@dataclass(frozen=True)
class CallToStop:
    """A placed call whose request was canceled and whose stop Bland has not accepted yet."""

    request_id: str
    call_id: str
    cancel_requested_at: datetime


@dataclass(frozen=True)
class Queued:
    """What record_queued did: recorded or not (stale claim), and a stop owed to a cancel."""

    recorded: bool
    stop: CallToStop | None = None


@dataclass(frozen=True)
class Outcome:
    """What a webhook or a poll learned about a call."""

    call_id: str
    status: str | None
    answered_by: str | None = None
    call_length_min: float | None = None
    duration_s: float | None = None
    summary: str | None = None
    disposition_tag: str | None = None
    recording_url: str | None = None
    error_message: str | None = None
    price_usd: float | None = None
    metadata: dict[str, Any] | None = None
    completed: bool = False
    source: Literal["webhook", "poll"] = "webhook"
    raw: dict[str, Any] = field(default_factory=dict)
    queue_status: str | None = None


@dataclass(frozen=True)
class OutcomeResult:
    """What record_outcome did; `changed=False` for an unknown call, a replay or a live call."""

    found: bool
    changed: bool
    state: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    publisher_webhook: str | None = None


@dataclass(frozen=True)
class Tracked:
    """A queued call whose outcome is overdue (or whose next check is due)."""

    request_id: str
    call_id: str
    phone_number: str | None
    attempt_started_at: datetime | None
    outcome_due_at: datetime | None
    next_check_at: datetime | None
    correlation_id: str | None
    publisher_webhook: str | None


@dataclass(frozen=True)
class UnknownAttempt:
    """An attempt whose outcome is unknown, due for reconciliation."""

    request_id: str
    attempt_id: int | None
    attempt_no: int
    phone_number: str | None
    attempt_started_at: datetime
    next_check_at: datetime | None
    correlation_id: str | None
    batch_request_id: str | None
    orphaned: bool = False  # the claiming process died; no error was ever seen for the POST


@dataclass(frozen=True)
class OutboxRow:
    """An event waiting to be published."""

    id: int
    event_id: str
    event_type: str
    request_id: str
    correlation_id: str | None
    reply_to: str | None
    body: str
    created_at: datetime


@dataclass(frozen=True)
class LedgerCounts:
    """Gauges: requests by state, unsent events, slots held."""

    by_state: dict[str, int]
    outbox_pending: int
    active_slots: int
    due: int = 0  # pending requests whose not_before has passed


LimitName = Literal["concurrency", "rate", "hourly", "daily", "smoothing", "bland_429"]


@dataclass(frozen=True)
class Cap:
    """At most `calls` calls placed within any `window_s` seconds (hourly, daily, smoothing)."""

    name: LimitName
    calls: int
    window_s: float


@dataclass(frozen=True)
class Limits:
    """The admission limits of one claim round (`service.dialing.admission` builds them)."""

    owner: str
    limit: int  # at most this many claims in the round
    max_concurrent: int
    rate_calls: int  # at most `rate_calls` attempts start within any `rate_window_s`
    rate_window_s: float
    slot_lease_s: float
    caps: tuple[Cap, ...] = ()  # windows counted over calls placed (not 429s or refused connects)


@dataclass(frozen=True)
class Usage:
    """What the ledger counted under the admission lock, for the admission decision."""

    due: int  # due requests, up to the round's limit
    active_slots: int
    started_in_window: int  # attempts started within the rate window
    placed_in_caps: tuple[int, ...] = ()  # calls placed within each of Limits.caps' windows


@dataclass(frozen=True)
class Admission:
    """How many claims are admitted, and which limit (if any) held the rest back."""

    admitted: int
    limited_by: LimitName | None
    screened: tuple[Screened, ...] = ()  # what compliance did with the round's candidates
    pace: float = 1.0  # the shared pace factor (lowered by Bland's 429s) read in the round


@dataclass(frozen=True)
class Candidate:
    """A due request the compliance screen looks at before it may be claimed."""

    request_id: str
    phone_number: str
    options: DialerOptions
    starts_at: datetime | None = None  # Bland's `start_time`: the call runs then, not now


@dataclass(frozen=True)
class NumberFacts:
    """What the ledger knows about one number, across all replicas, at the round's instant."""

    do_not_call: bool = False
    calls_24h: int = 0  # calls placed (or possibly placed) in the last 24 hours
    last_call_at: datetime | None = None


Verdict = Literal["go", "defer", "suppress", "hold"]


@dataclass(frozen=True)
class Screened:
    """go: claim it; defer: window closed (call.deferred); suppress: never (call.suppressed);
    hold: wait silently until `not_before` (same number dialed seconds ago)."""

    request_id: str
    verdict: Verdict
    reason: str | None = None
    not_before: datetime | None = None
    rule: str | None = None


# The pure compliance screen: candidates in claim order, facts by number, now, how many may go.
Screen = Callable[[Sequence[Candidate], Mapping[str, NumberFacts], datetime, int], list[Screened]]

# The pure admission decision the claim round runs inside its transaction.
Admit = Callable[[Usage, Limits], Admission]
