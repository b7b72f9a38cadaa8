"""`dialer events` and `dialer dead-letters` as an operator uses them, on the real broker."""

from __future__ import annotations

import asyncio
import io
import json

import aio_pika
import pytest

from service.bus.topology import declare
from service.commands.cli import main
from service.commands.dead_letters import Selection, list_dead, purge, replay
from service.commands.events import follow
from service.settings import Settings
from tests.conftest import Broker
from tests.support.bus import drain, queue_depth

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of this test, also exported for the CLI commands."""
    monkeypatch.setenv("DIALER_AMQP_URL", broker.url)
    monkeypatch.setenv("DIALER_PREFIX", broker.prefix)
    return Settings(prefix=broker.prefix, amqp_url=broker.url)


async def _listening(notes: io.StringIO, timeout_s: float = 20.0) -> str:
    for _ in range(int(timeout_s / 0.02)):
        if notes.getvalue():
            return notes.getvalue()
        await asyncio.sleep(0.02)
    raise AssertionError("no listening line")


@pytest.mark.parametrize("as_json", [False, True])
async def test_events_name_each_type_and_say_when_they_listen(
    settings: Settings, as_json: bool
) -> None:
    out, notes = io.StringIO(), io.StringIO()
    listening = asyncio.create_task(
        follow(settings, out, as_json=as_json, window_s=2.0, notes=notes)
    )
    note = await _listening(notes)
    assert note.startswith(f"listening on {settings.prefix}.events (every event type) until 2 s")
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        exchange = await (await connection.channel()).get_exchange(
            f"{settings.prefix}.events", ensure=False
        )
        body = {"request_id": "r-7", "call_id": "c-7", "occurred_at": "2026-11-24T12:00:00Z"}
        await exchange.publish(aio_pika.Message(json.dumps(body).encode()), "call.queued")
        await exchange.publish(aio_pika.Message(b"\xff not json"), "call.completed")
    assert await listening == 2
    first, second = out.getvalue().splitlines()
    if as_json:
        assert json.loads(first) == {"event_type": "call.queued", **body}
        assert json.loads(second) == {"event_type": "call.completed", "raw": "\ufffd not json"}
    else:
        assert first.split()[:2] == ["2026-11-24T12:00:00Z", "call.queued"]
        assert second.startswith("call.completed (not JSON")


async def _dead_letter(settings: Settings, *messages: aio_pika.Message) -> None:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        topology = await declare(channel, settings)
        for message in messages:
            await topology.dead_exchange.publish(message, routing_key="call.create")
    for _ in range(1500):  # 30 s: dead-lettering is asynchronous
        if await queue_depth(settings, f"{settings.prefix}.dead") == len(messages):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("dead letters not queued")


HOSTILE = [
    aio_pika.Message(b"\xff\xfe\x00\x1b[31m\xc3", message_id="bytes-1"),
    aio_pika.Message(
        b"{}" * 200,
        message_id="bytes-2",
        headers={"x-dialer-reason": b"\xffraw", "x-dialer-replays": "many", "x-dialer-error": 7},
    ),
    aio_pika.Message(b"", headers={"x-dialer-reason": "invalid_json"}),
]


async def test_list_survives_any_bytes_and_keeps_every_message(settings: Settings) -> None:
    await _dead_letter(settings, *HOSTILE)
    out = io.StringIO()
    assert await list_dead(settings, 10, out, as_json=True) == 3
    listed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["message_id"] for d in listed[:2]] == ["bytes-1", "bytes-2"]
    assert listed[2]["preview"] == ""
    assert listed[0]["preview"] == "\\xff\\xfe\\x00\\x1b[31m\\xc3"
    assert listed[1]["reason"] == "\\xffraw"
    assert listed[1]["replays"] == 0
    assert listed[1]["preview"].endswith("...")
    text = io.StringIO()
    assert await list_dead(settings, 10, text, as_json=False) == 3
    assert all(line.replace("\t", " ").isprintable() for line in text.getvalue().splitlines())
    assert await queue_depth(settings, f"{settings.prefix}.dead") == 3


async def test_replay_and_purge_select_by_id_and_reason(settings: Settings) -> None:
    await _dead_letter(settings, *HOSTILE)
    assert await replay(settings, None, None, io.StringIO(), message_id="bytes-1") == 1
    (replayed,) = await drain(settings, f"{settings.prefix}.requests")
    assert replayed.message_id == "bytes-1"
    assert replayed.body == HOSTILE[0].body
    out = io.StringIO()
    assert await purge(settings, Selection(reason="invalid_json"), out) == 1
    assert out.getvalue().splitlines()[-1] == f"purged 1 from {settings.prefix}.dead"
    listed = io.StringIO()
    assert await list_dead(settings, 10, listed, as_json=True) == 1
    assert json.loads(listed.getvalue())["message_id"] == "bytes-2"


async def test_purge_needs_a_selection_and_an_unknown_id_fails(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await _dead_letter(settings, HOSTILE[0])
    assert await asyncio.to_thread(main, ["dead-letters", "purge"]) == 2
    assert "--id ID, --reason R, or --all" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["dead-letters", "replay", "--id", "nope"]) == 1
    assert "no dead letter with id nope" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["dead-letters", "purge", "--all"]) == 0
    assert await queue_depth(settings, f"{settings.prefix}.dead") == 0
