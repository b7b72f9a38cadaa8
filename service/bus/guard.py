"""A guard on AMQP property decoding: one malformed delivery must cost at most itself.

pamqp (under aiormq and aio-pika) raises on properties that are legal on the wire but that
Python cannot hold: a shortstr that is not UTF-8 (`correlation_id`, `type`, `message_id`,
the routing key, ...), a timestamp beyond year 9999 (microseconds), a header key that is
not UTF-8. aiormq's frame reader does not catch it: the connection closes, every unacked
delivery returns to the quorum queue and counts toward its delivery limit, and after a few
reconnects the broker dead-letters the whole prefetch window — valid requests lost.

`install()` swaps a few entries of pamqp's decode and encode tables. Each replacement calls
pamqp's own function first and acts only where it would raise: text falls back to UTF-8
with `surrogateescape` (lossless), an out-of-range timestamp becomes `UnreadableTimestamp`
(a datetime holding the wire integer). Encoding reverses both, so a dead-letter copy is
byte-identical to what arrived. `problems(message)` says what was excused, for the consumer
to reject the delivery with a reason. Measured: ~3 µs per delivery.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Iterable
from importlib.metadata import version
from typing import Any

from pamqp import decode, encode

_U8 = struct.Struct("B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ESCAPES = range(0xDC80, 0xDD00)  # what surrogateescape makes of the bytes 0x80-0xFF
_TEXT_PROPERTIES = (
    "routing_key", "exchange", "correlation_id", "message_id", "type", "reply_to",
    "content_type", "content_encoding", "app_id", "user_id", "expiration",
)  # fmt: skip


class UnreadableTimestamp(datetime.datetime):
    """A timestamp datetime cannot hold: datetime.max (UTC), the wire value in `raw`."""

    raw: int

    def __new__(cls, raw: int) -> UnreadableTimestamp:
        """The wire integer, kept for an exact copy."""
        self = super().__new__(cls, 9999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC)
        self.raw = raw
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its raw value."""
        return (UnreadableTimestamp, (self.raw,))

    def __repr__(self) -> str:
        """Shows the raw value, not year 9999."""
        return f"UnreadableTimestamp(raw={self.raw})"


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        result: tuple[int, str] = _ORIGINAL["d.shortstr"](value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")
    return result


def _timestamp(value: bytes) -> tuple[int, datetime.datetime]:
    try:
        result: tuple[int, datetime.datetime] = _ORIGINAL["d.timestamp"](value)
    except (ValueError, OverflowError, OSError):
        if len(value) < _U64.size:
            raise  # truncated: not a value this guard excuses
        return _U64.size, UnreadableTimestamp(_U64.unpack_from(value)[0])
    return result


def _field_table(value: bytes) -> tuple[int, dict[str, Any]]:
    try:
        result: tuple[int, dict[str, Any]] = _ORIGINAL["d.table"](value)
    except UnicodeDecodeError:
        pass  # a key that is not UTF-8 (values already fall back to bytes in pamqp)
    else:
        return result
    end = 4 + _U32.unpack_from(value)[0]
    if end > len(value):
        raise ValueError("Field table length exceeds available data")
    offset, table = 4, {}
    while offset < end:
        key_length = value[offset]
        key = value[offset + 1 : offset + 1 + key_length].decode("utf-8", "surrogateescape")
        offset += 1 + key_length
        consumed, table[key] = decode.embedded_value(value[offset:])
        offset += consumed
    return end, table


def _encode_short_string(value: str) -> bytes:
    try:
        result: bytes = _ORIGINAL["e.shortstr"](value)
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
        if len(raw) > 255:
            raise TypeError("string exceeds maximum length of 255 bytes") from None
        return _U8.pack(len(raw)) + raw
    return result


def _encode_timestamp(value: Any) -> bytes:
    if isinstance(value, UnreadableTimestamp):
        return _U64.pack(value.raw)
    result: bytes = _ORIGINAL["e.timestamp"](value)
    return result


def _encode_field_table(value: dict[str, Any]) -> bytes:
    try:
        result: bytes = _ORIGINAL["e.table"](value)
    except UnicodeEncodeError:
        pass  # a key holding surrogateescape'd bytes
    else:
        return result
    parts = []
    for key, item in sorted(value.items()):
        raw = key.encode("utf-8", "surrogateescape")[:128]
        parts.append(_U8.pack(len(raw)) + raw + encode.encode_table_value(item))
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def _encode_table_value(value: Any) -> bytes:
    if isinstance(value, bytes):  # pamqp decodes a longstr that is not UTF-8 to bytes
        return b"S" + _U32.pack(len(value)) + value
    if isinstance(value, UnreadableTimestamp):
        return b"T" + _U64.pack(value.raw)
    try:
        result: bytes = _ORIGINAL["e.value"](value)
    except UnicodeEncodeError:
        if not isinstance(value, str):
            raise
        raw = value.encode("utf-8", "surrogateescape")
        return b"S" + _U32.pack(len(raw)) + raw
    return result


_ORIGINAL: dict[str, Callable[..., Any]] = {}


def _slots() -> list[tuple[Any, Any, Callable[..., Any], str]]:
    """(container, key, replacement, name of the original)."""
    return [
        (decode.METHODS, "shortstr", _short_str, "d.shortstr"),
        (decode.METHODS, "timestamp", _timestamp, "d.timestamp"),
        (decode.TABLE_MAPPING, b"T", _timestamp, "d.timestamp"),
        (decode.METHODS, "table", _field_table, "d.table"),
        (decode.TABLE_MAPPING, b"F", _field_table, "d.table"),
        (encode.METHODS, "shortstr", _encode_short_string, "e.shortstr"),
        (encode.METHODS, "timestamp", _encode_timestamp, "e.timestamp"),
        (encode.METHODS, "table", _encode_field_table, "e.table"),
        (encode, "field_table", _encode_field_table, "e.table"),
        (encode, "encode_table_value", _encode_table_value, "e.value"),
    ]


def _get(container: Any, key: Any) -> Any:
    return container[key] if isinstance(container, dict) else getattr(container, key)


def _set(container: Any, key: Any, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        setattr(container, key, value)


def install() -> None:
    """Idempotent; RuntimeError when pamqp is not the 4.0.x this was written against."""
    if _ORIGINAL:
        return
    if not version("pamqp").startswith("4.0."):
        raise RuntimeError(f"AMQP guard written for pamqp 4.0.x, found {version('pamqp')}")
    expected: dict[str, Callable[..., Any]] = {
        "d.shortstr": decode.short_str,
        "d.timestamp": decode.timestamp,
        "d.table": decode.field_table,
        "e.shortstr": encode.short_string,
        "e.timestamp": encode.timestamp,
        "e.table": encode.field_table,
        "e.value": encode.encode_table_value,
    }
    for container, key, _, name in _slots():
        if _get(container, key) is not expected[name]:
            raise RuntimeError(f"AMQP guard: pamqp's {name} is not where it was expected")
    _ORIGINAL.update(expected)
    for container, key, replacement, _ in _slots():
        _set(container, key, replacement)


def uninstall() -> None:
    """Put pamqp's own functions back (tests)."""
    if not _ORIGINAL:
        return
    for container, key, _, name in _slots():
        _set(container, key, _ORIGINAL[name])
    _ORIGINAL.clear()


def _escaped(text: str) -> bool:
    return any(ord(char) in _ESCAPES for char in text)


def problems(message: Any) -> list[str]:
    """What had to be excused in a delivered message; empty for a well-formed one."""
    found = [
        f"{name} is not UTF-8"
        for name in _TEXT_PROPERTIES
        if isinstance(value := getattr(message, name, None), str) and _escaped(value)
    ]
    timestamp = getattr(message, "timestamp", None)
    if isinstance(timestamp, UnreadableTimestamp):
        found.append(f"timestamp {timestamp.raw} is out of range")
    found.extend(_table_problems((getattr(message, "headers", None) or {}).items(), "header "))
    return found


def _table_problems(items: Iterable[tuple[Any, Any]], where: str) -> list[str]:
    found: list[str] = []
    for key, value in items:
        name = f"{where}[{key}]" if isinstance(key, int) else f"{where}{printable(str(key))!r}"
        if isinstance(key, str) and _escaped(key):
            found.append(f"{name} (key) is not UTF-8")
        if isinstance(value, bytes) or (isinstance(value, str) and _escaped(value)):
            found.append(f"{name} is not UTF-8")
        elif isinstance(value, UnreadableTimestamp):
            found.append(f"{name} timestamp {value.raw} is out of range")
        elif isinstance(value, dict):
            found.extend(_table_problems(value.items(), f"{name}."))
        elif isinstance(value, list):
            found.extend(_table_problems(enumerate(value), name))
    return found


def printable(value: str) -> str:
    """Safe for JSON, SQL and logs: escaped bytes shown as \\xNN; unchanged when well-formed."""
    if not _escaped(value):
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
