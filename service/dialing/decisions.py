"""Pure decisions of the dispatcher: what a failed POST leads to, before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.backoff import Uniform, retry_delay_s
from service.errors import (
    AccountError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)

# The `result` label of dialer_calls_dialed_total.
DialResult = Literal[
    "queued", "failed", "account_error", "throttled", "transient", "unknown", "unrecorded"
]
# retry: nothing was placed, dial again later; fail: Bland refused the request for good;
# unknown: the call may exist, reconcile and never redial; pause: Bland refuses our account.
Action = Literal["retry", "fail", "unknown", "pause"]
# How a failure holds back every claim: not at all, a jittered hold, or the full backoff ceiling.
Setback = Literal["none", "jitter", "ceiling"]


@dataclass(frozen=True)
class Decision:
    """What to record for a failed dial attempt, and how it slows the dispatcher."""

    action: Action
    result: DialResult
    setback: Setback = "none"
    delay_s: float = 0.0  # retry: when the request may be claimed again
    throttled: bool = False  # retry without spending the request's retry budget
    expected: bool = True  # False: an exception nobody classified (a bug); logged loudly
    http_status: int | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    """The backoff of dial retries (settings retry_backoff_base_s / _max_s)."""

    base_s: float
    cap_s: float


def decide(exc: BaseException, attempt: int, policy: RetryPolicy, draw: Uniform) -> Decision:
    """Classify a failed POST: permanent, account-wide, throttled, transient or unknown.

    - 4xx from Bland: the request is refused for good (call.failed).
    - 401/402/403: the account, not the request; every dial is paused, requests stay pending.
    - 429: wait without spending the budget; a 429 that is not about one number (no
      retry-after of its own) slows every dial down.
    - Nothing was sent (connect refused): retry with backoff, spending the budget.
    - Anything else may have placed the call: unknown, reconciled, never redialed.
    """
    if isinstance(exc, PermanentError):
        return Decision("fail", "failed", http_status=exc.http_status, errors=exc.errors)
    if isinstance(exc, AccountError):
        return Decision(
            "pause", "account_error", setback="ceiling", throttled=True, http_status=exc.http_status
        )
    if isinstance(exc, ThrottledError):
        delay_s = retry_delay_s(
            attempt, policy.base_s, policy.cap_s, at_least_s=exc.retry_after_s, draw=draw
        )
        setback: Setback = "jitter" if exc.retry_after_s is None else "none"
        return Decision("retry", "throttled", setback=setback, delay_s=delay_s, throttled=True)
    if isinstance(exc, TransientError):
        delay_s = retry_delay_s(attempt, policy.base_s, policy.cap_s, draw=draw)
        return Decision("retry", "transient", setback="jitter", delay_s=delay_s)
    expected = isinstance(exc, UnknownOutcomeError)
    return Decision("unknown", "unknown", setback="jitter", expected=expected)


def error_text(exc: BaseException) -> str:
    """`Type: message`, or the type alone: what the ledger records as the attempt's error."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
