"""`dialer publish`, `dialer events` and `dialer dead-letters` against the real broker."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aio_pika
import pytest

from service.bus.topology import declare
from service.commands.cli import main
from service.commands.dead_letters import list_dead, replay
from service.commands.events import event_line, follow
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import drain, publish_raw, queue_depth
from tests.support.stack import build_stack

pytestmark = pytest.mark.integration

CSV = "phone_number,task,max_duration\n5555550142,Hi.,3\n5555550143,Hello.,4\n5555550142,Hi.,3\n"


@pytest.fixture
def settings(broker: Broker, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of this test, also exported for the CLI commands."""
    monkeypatch.setenv("DIALER_AMQP_URL", broker.url)
    monkeypatch.setenv("DIALER_PREFIX", broker.prefix)
    return Settings(prefix=broker.prefix, amqp_url=broker.url, database_url=sqlite_url)


async def test_publish_sends_one_message_per_call_with_stable_ids(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(CSV)
    argv = ["publish", str(path), "--correlation-id", "batch-9", "--reply-to", "replies"]
    assert await asyncio.to_thread(main, argv) == 0
    assert "published 2 of 2" in capsys.readouterr().err
    first = await drain(settings, f"{settings.prefix}.requests")
    assert await asyncio.to_thread(main, argv) == 0
    second = await drain(settings, f"{settings.prefix}.requests")
    assert len(first) == len(second) == 2
    assert [m.message_id for m in first] == [m.message_id for m in second]
    message = first[0]
    assert message.routing_key == message.type == "call.create"
    assert message.correlation_id == "batch-9"
    assert message.reply_to == "replies"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(message.body) == {
        "phone_number": "5555550142",
        "task": "Hi.",
        "max_duration": 3,
    }


async def test_publish_refuses_a_bad_file_and_publishes_nothing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.csv"
    path.write_text("name\nAnn\n")
    assert await asyncio.to_thread(main, ["publish", str(path)]) == 2
    assert "phone_number" in capsys.readouterr().err


async def test_events_prints_a_line_per_event_within_the_window(settings: Settings) -> None:
    out, notes = io.StringIO(), io.StringIO()
    listening = asyncio.create_task(follow(settings, out, as_json=False, window_s=3.0, notes=notes))
    for _ in range(1000):  # until it says it listens: an event before that is not seen
        if notes.getvalue():
            break
        await asyncio.sleep(0.02)
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        exchange = await (await connection.channel()).get_exchange(
            f"{settings.prefix}.events", ensure=False
        )
        body = {
            "request_id": "r-1",
            "occurred_at": "2026-11-24T12:00:00Z",
            "phone_number": "+15555550142",
            "reason": "invalid_request",
            "errors": ["Missing required parameter: task."],
        }
        await exchange.publish(aio_pika.Message(json.dumps(body).encode()), "call.rejected")
    assert await listening == 1
    line = out.getvalue()
    assert "call.rejected" in line
    assert "request_id=r-1" in line
    assert "+1555***0142" in line
    assert "+15555550142" not in line
    assert "Missing required parameter: task." in line


def test_an_event_line_survives_a_body_that_is_not_json() -> None:
    assert event_line("call.queued", b"\x00") == "call.queued (not JSON: 1 bytes)"


async def test_dead_letters_are_listed_in_place_and_replayed_to_requests(
    settings: Settings,
) -> None:
    stack = await build_stack(settings, relay=False)
    try:
        await publish_raw(settings, b"{broken", routing_key="call.create", message_id="dl-1")
        await publish_raw(settings, b"[]", routing_key="call.create", message_id="dl-2")
        for _ in range(1500):  # 30 s: dead-lettering is asynchronous
            if await queue_depth(settings, f"{settings.prefix}.dead") == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await stack.close()
    out = io.StringIO()
    assert await list_dead(settings, 10, out, as_json=True) == 2
    listed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["reason"], d["request_id"]) for d in listed] == [
        ("invalid_json", "dl-1"),
        ("invalid_json", "dl-2"),
    ]
    assert "not valid JSON" in listed[0]["error"]
    assert await queue_depth(settings, f"{settings.prefix}.dead") == 2  # listing took nothing
    assert await replay(settings, 1, None, io.StringIO()) == 1
    (replayed,) = await drain(settings, f"{settings.prefix}.requests")
    assert replayed.message_id == "dl-1"
    assert replayed.routing_key == "call.create"
    assert replayed.body == b"{broken"
    assert replayed.headers["x-dialer-replays"] == 1
    assert not any(k.startswith("x-dialer-reason") for k in replayed.headers)
    assert await queue_depth(settings, f"{settings.prefix}.dead") == 1


async def test_replay_of_a_broker_dead_letter_keeps_its_routing_key(settings: Settings) -> None:
    poison = settings.model_copy(update={"delivery_limit": 1})
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        topology = await declare(await connection.channel(), poison)
        await topology.requests_exchange.publish(
            aio_pika.Message(b"{}", message_id="p-1"), routing_key="call.cancel"
        )
        while (message := await topology.requests_queue.get(fail=False, timeout=5)) is not None:
            await message.nack(requeue=True)
    for _ in range(1500):  # dead-lettering is asynchronous (30 s on a loaded machine)
        if await queue_depth(poison, f"{settings.prefix}.dead") == 1:
            break
        await asyncio.sleep(0.02)
    out = io.StringIO()
    await list_dead(poison, 10, out, as_json=True)
    (item,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (item["reason"], item["routing_key"]) == ("delivery_limit", "call.cancel")
    assert await replay(poison, None, "delivery_limit", io.StringIO()) == 1
    (again,) = await drain(poison, f"{settings.prefix}.requests")
    assert again.routing_key == "call.cancel"
    assert "x-death" not in again.headers
    assert "x-first-death-reason" not in again.headers


async def test_publish_batch_sends_the_csv_as_one_batch_with_a_stable_id(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("phone_number,name\n+12125550142,Maria\n+12125550143,James\n")
    argv = ["publish", str(path), "--batch", "--base-prompt", "Hi {{name}}", "--dispatch", "bland"]
    assert await asyncio.to_thread(main, argv) == 0
    assert "2 recipients" in capsys.readouterr().err
    first = await drain(settings, f"{settings.prefix}.requests")
    assert await asyncio.to_thread(main, argv) == 0
    second = await drain(settings, f"{settings.prefix}.requests")
    assert [m.message_id for m in first] == [m.message_id for m in second]
    assert len(first) == 1
    assert first[0].routing_key == first[0].type == "batch.create"
    body = json.loads(first[0].body)
    assert body["base_prompt"] == "Hi {{name}}"
    assert [e["name"] for e in body["call_data"]] == ["Maria", "James"]
    assert body["dialer"] == {"dispatch": "bland"}


async def test_publish_batch_names_malformed_lines_and_publishes_nothing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("phone_number,name\n+12125550142,Maria\n+12125550143\n")
    argv = ["publish", str(path), "--batch", "--base-prompt", "Hi {{name}}"]
    assert await asyncio.to_thread(main, argv) == 2
    assert "line 3: 1 cells, the header has 2" in capsys.readouterr().err
    # Nothing was published: the requests queue was never even declared.
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await drain(settings, f"{settings.prefix}.requests")
