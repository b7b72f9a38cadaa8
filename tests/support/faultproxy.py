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
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.tcpproxy import TcpProxy

_CREATE_CALL = re.compile(rb"^POST /v1/calls(?:\?[^ ]*)? HTTP/1\.[01]\r\n")
_CREATE_BATCH = re.compile(rb"^POST /v2/batches/create(?:\?[^ ]*)? HTTP/1\.[01]\r\n")
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


UPSTREAM_IDLE_S = 4.0  # below the sandbox's (uvicorn's) 5 s keep-alive timeout
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class _Link:
    """One client connection, the sandbox connection serving it now, and the exchange in progress."""

    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    idle_since: float = 0.0  # loop time the last answer completed
    request: bytearray = field(default_factory=bytearray)
    action: str = "pass"  # pass | delay | stall, for the answer to the request in progress
    delay_pending: bool = False
    awaiting: bool = False  # a request was sent and its answer is not complete
    head: bytearray = field(default_factory=bytearray)  # the answer's head, until its end
    body_left: int | None = None  # bytes of the answer's body still to come (None: unknown)
    client_gone: bool = False
    noted_after: bool = False
    batch: bool = False  # the request in progress is a `POST /v2/batches/create`


class BlandLink:
    """An HTTP/1.1-aware TCP proxy in front of the sandbox with faults on call creation.

    - `configure(stall_share=, delay_share=, delay_s=)`: the answer to a `POST /v1/calls` is
      withheld (the client times out: the call was recorded, its id never arrives) or delayed.
    - A client that goes away (a killed service) does not take back what it sent: the link
      keeps the sandbox's side open for `linger_s`, the request is served as real Bland would
      serve it, and its answer, nobody left to read it, is noted in
      `answered_after_client_died`. (The sandbox reads a body only after its latency: straight
      to it, a request in flight at a kill would simply vanish.)
    - The link keeps each client connection for as long as the client does, and sends a
      request that follows 4 s of quiet on a new sandbox connection: the sandbox closes idle
      keep-alive connections after 5 s, just when httpx's own 5 s expiry may reuse them, and a
      userspace proxy passing that close on late would widen the reuse race into ambiguous
      failures the service can only settle as `call.unresolved`. A close while an answer is
      due is passed on (the sandbox's "drop after recording" fault).
    """

    def __init__(
        self,
        target_port: int,
        *,
        seed: int = 0,
        target_host: str = "127.0.0.1",
        linger_s: float = 3.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.linger_s = linger_s
        self.port = 0
        self.stall_share = 0.0
        self.delay_share = 0.0
        self.delay_s = 0.0
        self.rng = random.Random(seed)
        self.creates = 0
        self.stalled: list[str] = []  # request ids whose answer was withheld
        self.delayed: list[str] = []
        self.released_at: dict[str, float] = {}  # request id -> time.time() a delayed answer left
        self.answered_after_client_died: list[str] = []
        # `POST /v2/batches/create` answered after the client died (its first request id).
        self.batches_answered_after_client_died: list[str] = []
        self.batch_creates = 0
        self.batch_answers = 0
        self.upstream_reopened = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def batch_posts_in_flight(self) -> int:
        """`POST /v2/batches/create` sent and not answered yet (whether the client waits or not)."""
        return self.batch_creates - self.batch_answers

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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _decide(self) -> str:
        # One draw per knob in a fixed order keeps a seeded run reproducible.
        stall, delay = self.rng.random(), self.rng.random()
        if stall < self.stall_share:
            return "stall"
        if delay < self.delay_share:
            return "delay"
        return "pass"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._requests(_Link(reader, writer))

    async def _upstream(self, link: _Link, *, new_request: bool) -> asyncio.StreamWriter:
        """The sandbox connection for this client. A new request after 4 s of quiet goes out
        on a new connection: the sandbox closes idle ones after 5 s, and a request crossing
        that close would be lost in the middle."""
        stale = (
            new_request
            and link.upstream is not None
            and asyncio.get_running_loop().time() - link.idle_since > UPSTREAM_IDLE_S
        )
        if stale and link.upstream is not None:
            self._drop(link.upstream)
        if link.upstream is None or link.upstream.is_closing():
            if link.upstream is not None:
                self.upstream_reopened += 1
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            link.upstream = up_writer
            self._spawn(self._responses(link, up_reader, up_writer))
        return link.upstream

    async def _requests(self, link: _Link) -> None:
        """Client to sandbox: forward everything; note where each request starts."""
        try:
            while data := await link.client_reader.read(65536):
                new_request = bool(_REQUEST_LINE.match(data))
                if new_request:  # keep-alive: one request at a time per link
                    link.request = bytearray()
                    link.action = "pass"
                    link.awaiting = True
                    link.head = bytearray()
                    link.body_left = None
                    if _CREATE_CALL.match(data):
                        self.creates += 1
                        link.action = self._decide()
                        link.delay_pending = link.action == "delay"
                    link.batch = bool(_CREATE_BATCH.match(data))
                    self.batch_creates += link.batch
                link.request += data
                upstream = await self._upstream(link, new_request=new_request)
                upstream.write(data)
                await upstream.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # What was sent is Bland's now: let the sandbox finish it, then let the link go.
            link.client_gone = True
            self._drop(link.client_writer)
            if link.upstream is not None:
                if self.linger_s > 0:
                    asyncio.get_running_loop().call_later(self.linger_s, self._drop, link.upstream)
                else:
                    self._drop(link.upstream)

    def _track(self, link: _Link, data: bytes) -> None:
        """Follow the answer's length to know when it is complete."""
        if link.body_left is None:
            link.head += data
            end = link.head.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _CONTENT_LENGTH.search(bytes(link.head[:end]))
            if length is None:
                return  # no length: complete only when the sandbox closes
            link.body_left = int(length.group(1)) - (len(link.head) - end - 4)
        else:
            link.body_left -= len(data)
        if link.body_left <= 0:
            link.awaiting = False
            self.batch_answers += link.batch
            link.batch = False
            link.idle_since = asyncio.get_running_loop().time()

    async def _responses(
        self, link: _Link, src: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        """Sandbox to client: withhold or delay the answer to a call creation."""
        try:
            while data := await src.read(65536):
                self._track(link, data)
                if link.client_gone:
                    if not link.noted_after and _CREATE_CALL.match(bytes(link.request)):
                        self._note(self.answered_after_client_died, link)
                    elif not link.noted_after and _CREATE_BATCH.match(bytes(link.request)):
                        self._note(self.batches_answered_after_client_died, link)
                    link.noted_after = True
                    continue  # nobody to answer: read and discard
                if link.action == "stall":
                    self._note(self.stalled, link)
                    continue  # read and discard: the client waits until its timeout
                if link.delay_pending:
                    link.delay_pending = False
                    self._note(self.delayed, link)
                    await asyncio.sleep(self.delay_s)  # the network's delay, not a wait
                    self.released_at[self._request_id(link)] = time.time()
                link.client_writer.write(data)
                await link.client_writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(upstream)
            if link.awaiting and link.action != "stall":
                self._drop(link.client_writer)  # closed while an answer was due: pass it on

    @staticmethod
    def _request_id(link: _Link) -> str:
        match = _REQUEST_ID.search(bytes(link.request))
        return match.group(1).decode(errors="replace") if match else "?"

    @classmethod
    def _note(cls, into: list[str], link: _Link) -> None:
        key = cls._request_id(link)
        if not into or into[-1] != key:
            into.append(key)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.transport.abort()
