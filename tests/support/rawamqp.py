"""Publish AMQP messages whose properties a normal client refuses or cannot express.

aio-pika/aiormq (through pamqp) encode every short string as UTF-8 text and the timestamp as a
datetime, so a `correlation_id` that is not valid UTF-8 or a `timestamp` in microseconds can
not be sent with them. This module speaks AMQP 0-9-1 itself: the method frames are marshalled
with pamqp, but the content header frame, which carries the properties, is built byte by byte
here, so any property bytes reach the broker exactly as given.

    async with RawPublisher(url) as raw:
        await raw.publish("dialer.requests", "call.create", body,
                          message_id=b"req-1", correlation_id=b"\xff\xfe", timestamp=10**15)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
BASIC_CLASS_ID = 60
CHANNEL = 1

# Basic properties in wire order, with their flag bit and type (AMQP 0-9-1, class basic).
_PROPERTIES: tuple[tuple[str, int, str], ...] = (
    ("content_type", 15, "shortstr"),
    ("content_encoding", 14, "shortstr"),
    ("headers", 13, "table"),
    ("delivery_mode", 12, "octet"),
    ("priority", 11, "octet"),
    ("correlation_id", 10, "shortstr"),
    ("reply_to", 9, "shortstr"),
    ("expiration", 8, "shortstr"),
    ("message_id", 7, "shortstr"),
    ("timestamp", 6, "timestamp"),
    ("type", 5, "shortstr"),
    ("user_id", 4, "shortstr"),
    ("app_id", 3, "shortstr"),
)


class RawAmqpError(RuntimeError):
    """The broker refused, closed the connection, or nacked a message."""


def _shortstr(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise ValueError("a short string is at most 255 bytes")
    return struct.pack(">B", len(raw)) + raw


def _table(value: dict[str, bytes | str]) -> bytes:
    """A field table of long strings only (enough for test headers)."""
    out = b""
    for key, item in value.items():
        raw = item.encode() if isinstance(item, str) else bytes(item)
        out += _shortstr(key) + b"S" + struct.pack(">I", len(raw)) + raw
    return struct.pack(">I", len(out)) + out


def content_header_payload(body_size: int, properties: dict[str, Any]) -> bytes:
    """The payload of a content header frame: class, weight, size, flags, property list."""
    unknown = set(properties) - {name for name, _, _ in _PROPERTIES}
    if unknown:
        raise ValueError(f"unsupported properties: {sorted(unknown)}")
    flags = 0
    encoded = b""
    for name, bit, kind in _PROPERTIES:
        value = properties.get(name)
        if value is None:
            continue
        flags |= 1 << bit
        if kind == "shortstr":
            encoded += _shortstr(value)
        elif kind == "octet":
            encoded += struct.pack(">B", int(value))
        elif kind == "timestamp":
            encoded += struct.pack(">Q", int(value))  # any 64-bit value, seconds or not
        else:
            encoded += _table(value)
    return struct.pack(">HHQH", BASIC_CLASS_ID, 0, body_size, flags) + encoded


def _frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + FRAME_END


class RawPublisher:
    """A minimal AMQP 0-9-1 publisher with confirms on one channel."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        self.user = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.timeout_s = timeout_s
        self.frame_max = 131072
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._delivery_tag = 0
        self.returned: list[commands.Basic.Return] = []

    async def __aenter__(self) -> RawPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ frames

    def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise RawAmqpError("not connected")
        self._writer.write(data)

    def _method(self, method: Any, channel: int = 0) -> None:
        self._send(frame.marshal(method, channel))

    async def _read_frame(self) -> tuple[int, Any]:
        if self._reader is None:
            raise RawAmqpError("not connected")
        head = await asyncio.wait_for(self._reader.readexactly(7), self.timeout_s)
        frame_type, channel, size = struct.unpack(">BHI", head)
        rest = await asyncio.wait_for(self._reader.readexactly(size + 1), self.timeout_s)
        if frame_type != FRAME_METHOD:  # content of a returned message, heartbeats: not decoded
            return channel, None
        _, channel, value = frame.unmarshal(head + rest)
        return channel, value

    async def _expect(self, kind: type) -> Any:
        """The next method of this kind (skipping heartbeats); a Close is an error."""
        while True:
            _, value = await self._read_frame()
            if isinstance(value, kind):
                return value
            if isinstance(value, commands.Connection.Close | commands.Channel.Close):
                raise RawAmqpError(f"broker closed: {value.reply_code} {value.reply_text}")

    # ------------------------------------------------------------ connection

    async def connect(self) -> None:
        """Handshake (PLAIN), open channel 1, enable publisher confirms."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )
        self._send(header.ProtocolHeader().marshal())
        await self._expect(commands.Connection.Start)
        self._method(
            commands.Connection.StartOk(
                client_properties={"product": "faults-raw-publisher"},
                mechanism="PLAIN",
                response=f"\0{self.user}\0{self.password}",
                locale="en_US",
            )
        )
        tune = await self._expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or self.frame_max
        self._method(
            commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=self.frame_max, heartbeat=0
            )
        )
        self._method(commands.Connection.Open(virtual_host=self.vhost))
        await self._expect(commands.Connection.OpenOk)
        self._method(commands.Channel.Open(), CHANNEL)
        await self._expect(commands.Channel.OpenOk)
        self._method(commands.Confirm.Select(), CHANNEL)
        await self._expect(commands.Confirm.SelectOk)

    async def close(self) -> None:
        """Close politely; never raises."""
        if self._writer is None:
            return
        try:
            self._method(commands.Connection.Close(reply_code=200, reply_text="bye"))
            await asyncio.wait_for(self._expect(commands.Connection.CloseOk), 5)
        except Exception:  # noqa: S110 - closing is best effort
            pass
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        self._writer = None
        self._reader = None

    # ------------------------------------------------------------ publishing

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, **properties: Any
    ) -> None:
        """Publish one message (mandatory) and wait for the broker's confirm."""
        self._method(
            commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
            CHANNEL,
        )
        self._send(_frame(FRAME_HEADER, CHANNEL, content_header_payload(len(body), properties)))
        chunk = self.frame_max - 8
        for start in range(0, len(body), chunk):
            self._send(_frame(FRAME_BODY, CHANNEL, body[start : start + chunk]))
        self._delivery_tag += 1
        while True:
            _, value = await self._read_frame()
            if isinstance(value, commands.Basic.Return):
                self.returned.append(value)
            elif isinstance(value, commands.Basic.Ack):
                if value.delivery_tag >= self._delivery_tag:
                    return
            elif isinstance(value, commands.Basic.Nack):
                raise RawAmqpError(f"broker nacked delivery {value.delivery_tag}")
            elif isinstance(value, commands.Connection.Close | commands.Channel.Close):
                raise RawAmqpError(f"broker closed: {value.reply_code} {value.reply_text}")
