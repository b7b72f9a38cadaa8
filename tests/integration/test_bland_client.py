"""BlandClient against the sandbox over real HTTP: answers, refusals and faults classified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.bland.client import BlandClient
from service.errors import (
    AccountError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
)
from service.metrics import Metrics
from service.settings import Settings
from tests.support.sandbox import SandboxProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox(module_sandbox: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset: one process start for the whole file."""
    module_sandbox.reset()
    return module_sandbox


def settings_for(base_url: str, api_key: str = "test-api-key", **extra: Any) -> Settings:
    """Settings pointing the client at one sandbox."""
    return Settings(bland_base_url=base_url, bland_api_key=api_key, **extra)


@pytest.fixture
def metrics() -> Metrics:
    """Metrics on a private registry."""
    return Metrics(CollectorRegistry())


@pytest.fixture
async def client(sandbox: SandboxProcess, metrics: Metrics) -> AsyncIterator[BlandClient]:
    """A client for the sandbox."""
    instance = BlandClient(settings_for(sandbox.base_url, sandbox.api_key), metrics)
    yield instance
    await instance.aclose()


def body(n: int, **extra: Any) -> dict[str, Any]:
    """A valid send-call body for a distinct number."""
    return {"phone_number": f"+1415555{n:04d}", "task": "Say hello.", **extra}


async def test_create_call_returns_the_call_id_bland_recorded(
    client: BlandClient, sandbox: SandboxProcess, metrics: Metrics
) -> None:
    call_id = await client.create_call(body(1, metadata={"dialer_request_id": "r-1"}))

    [truth] = await sandbox.aground_truth()
    assert truth["call_id"] == call_id
    assert truth["metadata"] == {"dialer_request_id": "r-1"}
    observed = metrics.registry.get_sample_value(
        "dialer_bland_request_seconds_count", {"endpoint": "create_call", "status": "2xx"}
    )
    assert observed == 1.0


async def test_get_call_returns_details_and_none_for_an_unknown_id(client: BlandClient) -> None:
    call_id = await client.create_call(body(2, metadata={"k": "v"}))

    details = await client.get_call(call_id)

    assert details is not None
    assert details["call_id"] == call_id
    assert details["metadata"] == {"k": "v"}
    assert await client.get_call("00000000-0000-0000-0000-000000000000") is None


async def test_list_calls_filters_by_number_and_start_date(client: BlandClient) -> None:
    first = await client.create_call(body(3))
    await client.create_call(body(4))

    rows = await client.list_calls(to_number="+14155550003")
    future = await client.list_calls(
        to_number="+14155550003", start_date=datetime.now(UTC) + timedelta(days=2)
    )

    assert [row["call_id"] for row in rows] == [first]
    assert future == []


async def test_stop_call_says_whether_bland_knew_the_call(client: BlandClient) -> None:
    call_id = await client.create_call(body(5))

    assert await client.stop_call(call_id) is True
    assert await client.stop_call("00000000-0000-0000-0000-000000000000") is False


async def test_validation_refusal_is_permanent_with_bland_errors(client: BlandClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.create_call({"task": "no number"})

    assert caught.value.http_status == 400
    assert any("phone_number" in error for error in caught.value.errors)


async def test_a_wrong_key_is_an_account_error(sandbox: SandboxProcess, metrics: Metrics) -> None:
    client = BlandClient(settings_for(sandbox.base_url, "not-the-key"), metrics)
    try:
        with pytest.raises(AccountError) as caught:
            await client.create_call(body(6))
    finally:
        await client.aclose()

    assert caught.value.http_status == 401
    assert (await sandbox.acounts())["total"] == 0


async def test_injected_429_is_throttling(client: BlandClient, sandbox: SandboxProcess) -> None:
    await sandbox.aset_faults(rate_limit_429_share=1.0)

    with pytest.raises(ThrottledError):
        await client.create_call(body(7))

    assert (await sandbox.acounts())["total"] == 0


async def test_same_number_within_ten_seconds_waits_ten_seconds(client: BlandClient) -> None:
    await client.create_call(body(8))

    with pytest.raises(ThrottledError) as caught:
        await client.create_call(body(8))

    assert caught.value.retry_after_s == 10.0


async def test_injected_5xx_is_an_unknown_outcome(
    client: BlandClient, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(error_5xx_share=1.0)

    with pytest.raises(UnknownOutcomeError):
        await client.create_call(body(9))


async def test_dropped_answer_is_unknown_although_the_call_exists(
    client: BlandClient, sandbox: SandboxProcess
) -> None:
    await sandbox.aset_faults(drop_share=1.0)

    with pytest.raises(UnknownOutcomeError):
        await client.create_call(body(10, metadata={"dialer_request_id": "r-10"}))

    [truth] = await sandbox.aground_truth()
    assert truth["metadata"] == {"dialer_request_id": "r-10"}
    assert truth["response_dropped"] is True


async def test_a_read_timeout_is_an_unknown_outcome(
    sandbox: SandboxProcess, metrics: Metrics
) -> None:
    await sandbox.aset_faults(latency_ms=600)
    client = BlandClient(
        settings_for(sandbox.base_url, sandbox.api_key, bland_read_timeout_s=0.2), metrics
    )
    try:
        with pytest.raises(UnknownOutcomeError):
            await client.create_call(body(11))
    finally:
        await client.aclose()
    timeouts = metrics.registry.get_sample_value(
        "dialer_bland_request_seconds_count", {"endpoint": "create_call", "status": "timeout"}
    )
    assert timeouts == 1.0


async def test_nobody_listening_is_transient_nothing_was_sent(metrics: Metrics) -> None:
    client = BlandClient(settings_for(f"http://127.0.0.1:{free_port()}"), metrics)
    try:
        with pytest.raises(TransientError) as caught:
            await client.create_call(body(12))
        with pytest.raises(TransientError):
            await client.get_call("any")
    finally:
        await client.aclose()

    assert not isinstance(caught.value, UnknownOutcomeError)
