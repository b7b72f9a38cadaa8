"""The sandbox's configuration, built once from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.faults import Faults
from sandbox.outcomes import Durations, Shares
from sandbox.plans import PLANS, Plan

CONCURRENCY_MODES = ("queue", "reject")


class OptionError(ValueError):
    """A command-line option of the sandbox is invalid; the message names it."""


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the simulator needs to know; runtime-changeable parts live in the state."""

    webhook_secret: str | None = None
    plan: Plan = PLANS["enterprise"]
    api_keys: frozenset[str] = frozenset()
    clock_speed: float = 1.0
    seed: int | None = None
    allow_http_webhooks: bool = False
    strict_https_webhooks: bool = False
    concurrency_mode: str = "queue"
    same_number_window_s: float = 10.0
    shares: Shares = field(default_factory=Shares)
    durations: Durations = field(default_factory=Durations)
    faults: Faults = field(default_factory=Faults)
    webhook_retry_delay_s: float = 1.0
    webhook_timeout_s: float = 10.0
    webhook_verify_tls: bool = True
    batch_status_timeout_s: float = 10.0
