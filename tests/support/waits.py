"""Waiting in tests: poll a condition until it holds, with a deadline generous for a loaded box."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

# The suite shares two cores with other work: a deadline only bounds a failure's cost.
DEADLINE_S = 30.0
INTERVAL_S = 0.02

Check = Callable[[], bool | Awaitable[bool]]


async def until(
    check: Check,
    what: str = "condition",
    timeout_s: float = DEADLINE_S,
    interval_s: float = INTERVAL_S,
) -> None:
    """Poll `check` (plain or async) until it is true; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def until_sync(
    check: Callable[[], bool],
    what: str = "condition",
    timeout_s: float = DEADLINE_S,
    interval_s: float = INTERVAL_S,
) -> None:
    """`until` for synchronous tests."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout_s} s")
        time.sleep(interval_s)


async def rounds_pass(read: Callable[[], int], count: int = 3, what: str = "rounds") -> None:
    """Wait until a round counter has advanced `count` past its value now: the loop moved on."""
    start = read()
    await until(lambda: read() >= start + count, f"{what}: {count} more after {start}")
