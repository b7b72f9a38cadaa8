"""A tiny asyncio TCP proxy for fault tests: pass traffic, cut every link, black-hole it."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Listens on 127.0.0.1:<port> and forwards to a target; `cut()` resets and refuses links."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        # pass | cut (reset and refuse) | blackhole (accept, hold everything: a partition, where
        # TCP would retransmit what was sent once the network heals)
        self.mode = "pass"
        self.accepted = 0
        self.refused = 0  # connections closed at once while cut
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy in front of the host and port of an amqp:// or postgresql:// URL."""
        parts = urlsplit(url)
        default = 5432 if parts.scheme.startswith("postgres") else 5672
        return cls(parts.hostname or "127.0.0.1", parts.port or default)

    def url(self, url: str) -> str:
        """The same URL, going through this proxy."""
        parts = urlsplit(url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    async def start(self) -> TcpProxy:
        """Start listening on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop every link."""
        self._drop_links()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Reset every open link; new connections are closed at once."""
        self.mode = "cut"
        self._flowing.set()
        self._drop_links()

    def blackhole(self) -> None:
        """Keep links open but forward nothing until restored (no FIN, no RST): what was
        sent meanwhile is held, as TCP would deliver it late, not lost."""
        self.mode = "blackhole"
        self._flowing.clear()

    def restore(self) -> None:
        """Forward traffic again (links cut meanwhile stay cut; clients reconnect)."""
        self.mode = "pass"
        self._flowing.set()

    def _drop_links(self) -> None:
        for writer in list(self._links):
            transport = writer.transport
            if hasattr(transport, "abort"):
                transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._links.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()  # held while black-holed
                if self.mode == "cut":
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(dst)
            with contextlib.suppress(Exception):
                dst.transport.abort()
