"""Pure choice of a simulated call's outcome and durations (bland-api.md sections 3 and 6.5)."""

from __future__ import annotations

import random
from dataclasses import dataclass

OUTCOME_KINDS = ("human", "voicemail", "no_answer", "busy", "failed")

FAILURE_MESSAGES = (
    "Call failed.",
    "Call failed. The number you dialed is not found.",
    "Call failed. The number you dialed is temporarily unavailable.",
    "Call failed. Service Provider Blocked Call due to Spam or Number Reputation. Try a different number.",
)
BUSY_MESSAGE = "Call failed. The number you dialed is busy. Please try again later."

SUMMARIES = {
    "human": "The agent spoke with the callee and completed the conversation.",
    "voicemail": "The call reached voicemail.",
    "no_answer": "The call was not answered.",
    "busy": "The line was busy.",
    "failed": "The call could not be connected.",
    "canceled": "The call was canceled before it connected.",
}
DEFAULT_TAGS = {
    "human": "COMPLETED_ACTION",
    "voicemail": "NO_CONTACT_MADE",
    "no_answer": "NO_ANSWER",
    "busy": "BUSY",
    "failed": "FAILED",
    "canceled": "CANCELED",
}


@dataclass(frozen=True)
class Shares:
    """Relative weights of each outcome; they need not sum to one."""

    human: float = 0.7
    voicemail: float = 0.15
    no_answer: float = 0.1
    busy: float = 0.03
    failed: float = 0.02

    def weights(self) -> list[float]:
        """The weights in OUTCOME_KINDS order."""
        return [self.human, self.voicemail, self.no_answer, self.busy, self.failed]


@dataclass(frozen=True)
class Durations:
    """Simulated seconds (before clock speed-up) of each stage of a call."""

    queue_s: float = 1.0
    ring_s: float = 5.0
    no_answer_ring_s: float = 30.0
    min_talk_s: float = 15.0
    max_talk_s: float = 60.0
    voicemail_s: float = 25.0


@dataclass(frozen=True)
class Outcome:
    """What will happen to one call once it is dialed."""

    kind: str
    status: str
    answered_by: str | None
    error_message: str | None
    talk_s: float
    ring_s: float


def choose_outcome(rng: random.Random, shares: Shares, durations: Durations) -> Outcome:
    """Draw one outcome by the configured shares; deterministic for a seeded rng."""
    weights = shares.weights()
    kind = rng.choices(OUTCOME_KINDS, weights=weights)[0] if sum(weights) > 0 else "human"
    if kind == "human":
        talk_s = round(rng.uniform(durations.min_talk_s, durations.max_talk_s))
        return Outcome(kind, "completed", "human", None, float(talk_s), durations.ring_s)
    if kind == "voicemail":
        return Outcome(
            kind, "completed", "voicemail", None, durations.voicemail_s, durations.ring_s
        )
    if kind == "no_answer":
        return Outcome(kind, "no-answer", "no-answer", None, 0.0, durations.no_answer_ring_s)
    if kind == "busy":
        return Outcome(kind, "busy", None, BUSY_MESSAGE, 0.0, 1.0)
    return Outcome(kind, "failed", None, rng.choice(FAILURE_MESSAGES), 0.0, 1.0)


def disposition_tag(kind: str, allowed: list[str] | None) -> str:
    """The tag Bland would pick: ours when the request allows it, else the first allowed one."""
    tag = DEFAULT_TAGS.get(kind, "FAILED")
    if not allowed or tag in allowed:
        return tag
    return allowed[0]
