"""Fault proxies for the fault suite, built on tests/support/tcpproxy.py.

`PartitionProxy` adds `hold()` to TcpProxy: a network partition as TCP lives it. Nothing flows
either way, but nothing is lost either: bytes sent meanwhile are delivered, in order, once the
link heals (TCP retransmits). TcpProxy's `blackhole()` discards bytes instead, which is not a
partition but a corrupted stream (a half AMQP frame, a PostgreSQL query that never arrived).
Its `delay_s` makes a slow link (every chunk waits that long, in both directions).

`BlandLink` sits between the service and the sandbox and speaks just enough HTTP/1.1 to know
when a response answers `POST /v1/calls`: it can withhold that response (the call was
recorded, the client times out: "timeout after recording") or delay it (Bland's webhook then
overtakes the service's own commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from dataclasses import dataclass, field

from tests.support.tcpproxy import TcpProxy

_CREATE_CALL = re.compile(rb"^POST /v1/calls(?:\?[^ ]*)? HTTP/1\.[01]\r\n")
_REQUEST_LINE = re.compile(rb"^(?:GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) \S+ HTTP/1\.[01]\r\n")
_REQUEST_ID = re.compile(rb'"dialer_request_id"\s*:\s*"([^"]+)"')


class PartitionProxy(TcpProxy):
    """TcpProxy with `hold()`: a partition that delays traffic instead of dropping it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.delay_s = 0.0  # added to every chunk forwarded, either way: a slow link

    def hold(self) -> None:
        """Partition: links stay open, nothing is forwarded; bytes wait for `restore()`."""
        self.mode = "hold"
        self._flowing.clear()

    def restore(self) -> None:
        """Forward traffic again, starting with everything held meanwhile."""
        super().restore()
        self._flowing.set()

    def cut(self) -> None:
        """Reset every link; new connections are reset too until `restore()`."""
        super().cut()
        self._flowing.set()  # held pumps wake up and see the cut

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()  # held, not dropped, while partitioned
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)  # the link's latency, not a wait
                if self.mode == "pass":
                    dst.write(data)
                    await dst.drain()
                elif self.mode == "cut":
                    break
                # "blackhole" (the base class's mode) drops the bytes
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(dst)
            with contextlib.suppress(Exception):
                dst.transport.abort()


@dataclass
class _Exchange:
    """The HTTP request in progress on one link and what to do with its response."""

    request: bytearray = field(default_factory=bytearray)
    action: str = "pass"  # pass | delay | stall
    delay_pending: bool = False


class BlandLink:
    """An HTTP-aware TCP proxy in front of the sandbox with per-request faults on call creation."""

    def __init__(self, target_port: int, *, seed: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.stall_share = 0.0
        self.delay_share = 0.0
        self.delay_s = 0.0
        self.rng = random.Random(seed)
        self.creates = 0
        self.stalled: list[str] = []  # request ids whose answer was withheld
        self.delayed: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        """The sandbox's URL through this link."""
        return f"http://127.0.0.1:{self.port}"

    def configure(
        self, *, stall_share: float = 0.0, delay_share: float = 0.0, delay_s: float = 0.0
    ) -> None:
        """Faults for the next `POST /v1/calls` answers (shares are probabilities)."""
        self.stall_share, self.delay_share, self.delay_s = stall_share, delay_share, delay_s

    async def start(self) -> BlandLink:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop every link."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _decide(self) -> str:
        # One draw per knob in a fixed order keeps a seeded run reproducible.
        stall, delay = self.rng.random(), self.rng.random()
        if stall < self.stall_share:
            return "stall"
        if delay < self.delay_share:
            return "delay"
        return "pass"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        exchange = _Exchange()
        self._writers.update((writer, up_writer))
        for coro in (
            self._requests(reader, up_writer, exchange),
            self._responses(up_reader, writer, exchange),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _requests(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        """Client to sandbox: forward everything; note where each request starts."""
        try:
            while data := await src.read(65536):
                if _REQUEST_LINE.match(data):  # keep-alive: one request at a time per link
                    exchange.request = bytearray()
                    exchange.action = "pass"
                    if _CREATE_CALL.match(data):
                        self.creates += 1
                        exchange.action = self._decide()
                        exchange.delay_pending = exchange.action == "delay"
                exchange.request += data
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(dst)

    async def _responses(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        """Sandbox to client: withhold or delay the answer to a call creation."""
        try:
            while data := await src.read(65536):
                if exchange.action == "stall":
                    self._note(self.stalled, exchange)
                    continue  # read and discard: the client waits until its timeout
                if exchange.delay_pending:
                    exchange.delay_pending = False
                    self._note(self.delayed, exchange)
                    await asyncio.sleep(self.delay_s)  # the network's delay, not a wait
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(dst)

    @staticmethod
    def _note(into: list[str], exchange: _Exchange) -> None:
        match = _REQUEST_ID.search(bytes(exchange.request))
        key = match.group(1).decode(errors="replace") if match else "?"
        if not into or into[-1] != key:
            into.append(key)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.transport.abort()
