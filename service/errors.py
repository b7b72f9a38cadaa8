"""The one error tree of the project: how a failure must be handled, not where it happened."""

from __future__ import annotations


class DialerError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(DialerError):
    """A setting is missing or invalid; start-up must stop and name it."""


class ServiceUnreachableError(DialerError):
    """A command cannot reach the broker or the database; it stops with one line naming it."""


class PermanentError(DialerError):
    """The request can never succeed as sent: reject it, never retry."""

    def __init__(
        self, message: str, errors: list[str] | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.errors = errors or [message]
        self.http_status = http_status


class TransientError(DialerError):
    """Nothing happened on the far side; retrying later is safe."""


class ThrottledError(TransientError):
    """The far side asked us to slow down; wait without spending the retry budget."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AccountError(TransientError):
    """The far side refused our account (bad key, no balance, flagged): nothing was placed,
    and no request can succeed until a human acts; pause everything, keep requests pending."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class UnknownOutcomeError(DialerError):
    """The request may have taken effect (timeout after sending, reset, 5xx): reconcile, never redo."""


class StoreUnavailableError(TransientError):
    """The ledger cannot be read or written; fail closed and pause."""
