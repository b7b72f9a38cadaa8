"""The pure state machine of a call request: states, allowed transitions, events, outcomes."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The state of one call request in the ledger."""

    PENDING = "pending"
    DIALING = "dialing"
    QUEUED = "queued"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    SUPPRESSED = "suppressed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    UNRESOLVED = "unresolved"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.DIALING, State.CANCELED, State.EXPIRED, State.SUPPRESSED}),
    # dialing -> pending: nothing was sent (429, connection refused); not announced.
    State.DIALING: frozenset(
        {State.QUEUED, State.FAILED, State.PENDING, State.UNKNOWN, State.SUPPRESSED}
    ),
    State.QUEUED: frozenset({State.COMPLETED, State.FAILED, State.CANCELED}),
    # A late answer to the attempt (webhook, poll) settles an unknown outcome directly.
    # unknown -> pending only when Bland's complete list, read after the grace, has no call.
    State.UNKNOWN: frozenset(
        {
            State.QUEUED,
            State.UNRESOLVED,
            State.COMPLETED,
            State.FAILED,
            State.CANCELED,
            State.PENDING,
        }
    ),
    State.COMPLETED: frozenset(),
    State.FAILED: frozenset(),
    State.REJECTED: frozenset(),
    State.SUPPRESSED: frozenset(),
    State.CANCELED: frozenset(),
    State.EXPIRED: frozenset(),
    State.UNRESOLVED: frozenset(),
}

TERMINAL: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

# States in which a concurrency slot is held.
HOLDS_SLOT: frozenset[State] = frozenset({State.DIALING, State.QUEUED, State.UNKNOWN})

# The event that announces each state (re-announced with duplicate=true for a duplicate id).
# dialing and unknown have no event of their own: the last announcement was call.accepted.
STATE_EVENT: dict[State, str] = {
    State.PENDING: "call.accepted",
    State.DIALING: "call.accepted",
    State.UNKNOWN: "call.accepted",
    State.QUEUED: "call.queued",
    State.COMPLETED: "call.completed",
    State.FAILED: "call.failed",
    State.REJECTED: "call.rejected",
    State.SUPPRESSED: "call.suppressed",
    State.CANCELED: "call.canceled",
    State.EXPIRED: "call.expired",
    State.UNRESOLVED: "call.unresolved",
}

_FAILED_STATUSES = frozenset({"failed", "error"})
_CANCELED_STATUSES = frozenset({"canceled", "cancelled"})
_ERROR_QUEUE_STATUSES = frozenset(
    {"pre_queue_error", "queue_error", "call_error", "complete_error"}
)


class TransitionError(ValueError):
    """A transition the state machine does not allow."""


def can_transition(current: State | str, target: State | str) -> bool:
    """True when `current -> target` is an allowed transition."""
    return State(target) in TRANSITIONS[State(current)]


def check_transition(current: State | str, target: State | str) -> State:
    """Return the target state, or raise TransitionError if the move is not allowed."""
    if not can_transition(current, target):
        raise TransitionError(f"transition {current} -> {target} is not allowed")
    return State(target)


def is_terminal(state: State | str) -> bool:
    """True when nothing can happen to the request any more."""
    return State(state) in TERMINAL


def classify_outcome(
    status: str | None, completed: bool, queue_status: str | None = None
) -> State | None:
    """The final state a Bland call outcome leads to, or None while the call is not finished.

    `completed`, `no-answer`, `busy`, `unknown` and any other status of a finished call are
    `completed` (the call happened; `status` tells how); `failed`/`error` are `failed`;
    `canceled` is `canceled`. Without a status, an error `queue_status` means `failed`.
    """
    if not completed:
        return None
    normalized = (status or "").strip().lower()
    if normalized in _CANCELED_STATUSES:
        return State.CANCELED
    if normalized in _FAILED_STATUSES:
        return State.FAILED
    if not normalized and (queue_status or "").strip().lower() in _ERROR_QUEUE_STATUSES:
        return State.FAILED
    return State.COMPLETED
