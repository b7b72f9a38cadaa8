"""The pure state machine: every allowed and forbidden transition, events, outcome classes."""

from __future__ import annotations

import itertools

import pytest

from schemas.events import EVENT_TYPES
from service.ledger.states import (
    HOLDS_SLOT,
    STATE_EVENT,
    TERMINAL,
    State,
    TransitionError,
    can_transition,
    check_transition,
    classify_outcome,
    is_terminal,
)

ALLOWED = {
    (State.PENDING, State.DIALING),
    (State.PENDING, State.CANCELED),
    (State.PENDING, State.EXPIRED),
    (State.PENDING, State.SUPPRESSED),
    (State.DIALING, State.QUEUED),
    (State.DIALING, State.FAILED),
    (State.DIALING, State.PENDING),
    (State.DIALING, State.UNKNOWN),
    (State.DIALING, State.SUPPRESSED),
    (State.QUEUED, State.COMPLETED),
    (State.QUEUED, State.FAILED),
    (State.QUEUED, State.CANCELED),
    (State.UNKNOWN, State.QUEUED),
    (State.UNKNOWN, State.UNRESOLVED),
    (State.UNKNOWN, State.COMPLETED),
    (State.UNKNOWN, State.FAILED),
    (State.UNKNOWN, State.CANCELED),
    (State.UNKNOWN, State.PENDING),  # an orphaned claim Bland confirms it never received
}
ALL_PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transitions(current: State, target: State) -> None:
    assert can_transition(current, target)
    assert check_transition(current.value, target.value) is target


@pytest.mark.parametrize(("current", "target"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_forbidden_transitions(current: State, target: State) -> None:
    assert not can_transition(current, target)
    with pytest.raises(TransitionError, match=f"{current.value} -> {target.value}"):
        check_transition(current, target)


def test_the_only_way_back_to_pending_after_an_unknown_outcome_is_the_orphan_edge() -> None:
    # unknown -> pending exists only for an orphaned claim Bland never received; the ledger
    # refuses it for any other unknown attempt (tests/integration/test_ledger.py).
    reachable = {State.UNKNOWN}
    frontier = [State.UNKNOWN]
    while frontier:
        current = frontier.pop()
        for target in State:
            if target is State.PENDING:
                continue
            if can_transition(current, target) and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert State.PENDING not in reachable
    assert State.DIALING not in reachable
    assert can_transition(State.UNKNOWN, State.PENDING)


def test_terminal_states() -> None:
    assert {
        State.COMPLETED,
        State.FAILED,
        State.REJECTED,
        State.SUPPRESSED,
        State.CANCELED,
        State.EXPIRED,
        State.UNRESOLVED,
    } == TERMINAL
    assert is_terminal("completed")
    assert not is_terminal("unknown")


def test_slot_holders_are_the_states_between_claim_and_outcome() -> None:
    assert {State.DIALING, State.QUEUED, State.UNKNOWN} == HOLDS_SLOT


def test_every_state_has_a_published_event() -> None:
    assert set(STATE_EVENT) == set(State)
    assert set(STATE_EVENT.values()) <= set(EVENT_TYPES)
    assert STATE_EVENT[State.UNKNOWN] == "call.accepted"
    assert STATE_EVENT[State.QUEUED] == "call.queued"


def test_an_unknown_state_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        can_transition("nope", "pending")


@pytest.mark.parametrize(
    ("status", "queue_status", "expected"),
    [
        ("completed", "complete", State.COMPLETED),
        ("no-answer", None, State.COMPLETED),
        ("busy", None, State.COMPLETED),
        ("unknown", None, State.COMPLETED),
        ("failed", "call_error", State.FAILED),
        ("error", None, State.FAILED),
        ("FAILED", None, State.FAILED),
        ("canceled", None, State.CANCELED),
        ("cancelled", None, State.CANCELED),
        (None, "call_error", State.FAILED),
        (None, "complete", State.COMPLETED),
        (None, None, State.COMPLETED),
    ],
)
def test_classify_a_finished_call(
    status: str | None, queue_status: str | None, expected: State
) -> None:
    assert classify_outcome(status, completed=True, queue_status=queue_status) is expected


@pytest.mark.parametrize("status", ["completed", "failed", "canceled", None])
def test_an_unfinished_call_has_no_final_state(status: str | None) -> None:
    assert classify_outcome(status, completed=False) is None
