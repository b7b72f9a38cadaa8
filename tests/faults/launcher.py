"""Start `dialer serve` and `dialer sandbox` as processes through the console script.

Nothing here imports the service: the fault suite drives the installed `dialer` entry point
(`Path(sys.executable).parent / "dialer"`), so it keeps working while the service's packages
are regrouped. Every wait is a poll on a condition with a deadline, and runs on the test's
event loop without blocking it (the fault proxies live on that loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.sandbox import (
    DEFAULT_OPTIONS,
    REPO_ROOT,
    SandboxProcess,
    command_line,
    free_port,
)

DIALER = Path(sys.executable).parent / "dialer"
# A niced process start under two busy loops took 33 s of wall time for 1.4 s of CPU (58 s
# seen elsewhere): the deadline is for a process that never comes up, not a slow one.
READY_TIMEOUT_S = 120.0


class LaunchError(AssertionError):
    """A process did not start, or not in time (an assertion: the scenario fails)."""


def _check_entry_point() -> None:
    if not DIALER.exists():
        raise LaunchError(f"no `dialer` console script at {DIALER}: run `make install`")


async def poll(predicate: Any, *, timeout_s: float, what: str, interval_s: float = 0.05) -> float:
    """Await until `predicate()` (sync or async) is true; seconds taken; LaunchError at the deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return loop.time() - started
        if loop.time() - started > timeout_s:
            raise LaunchError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


async def _wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout_s)
    except TimeoutError:
        return None


# ---------------------------------------------------------------- the service


@dataclass
class Service:
    """One `dialer serve` replica: restarted with the same environment and port."""

    name: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_paths: list[Path] = field(default_factory=list)
    starts: int = 0
    kills: int = 0

    @property
    def port(self) -> int:
        """The HTTP port (kept across restarts: Bland's webhooks carry it)."""
        return int(self.env["DIALER_HTTP_PORT"])

    @property
    def base_url(self) -> str:
        """Where its HTTP app listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """The process is alive."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything every generation of this replica printed."""
        return "\n".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    def log_lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines."""
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
        return out

    def spawn(self) -> None:
        """Start a new process (the previous one must be gone)."""
        _check_entry_point()
        if self.running:
            raise LaunchError(f"{self.name} is already running")
        self.starts += 1
        path = self.log_dir / f"{self.name}-{self.starts:02d}.log"
        self.log_paths.append(path)
        with path.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - the project's own entry point
                [str(DIALER), "serve"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self, *, wait: bool = True, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Spawn and (by default) wait for /readyz 200; seconds to ready."""
        started = time.monotonic()
        self.spawn()
        if wait:
            await self.wait_ready(timeout_s)
        return time.monotonic() - started

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """Status and body of GET /readyz; (0, {}) when nothing answers."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(self.base_url + "/readyz")
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError):
            return 0, {}

    async def metrics(self) -> str:
        """The Prometheus exposition text ('' when nothing answers)."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(self.base_url + "/metrics")).text
        except httpx.HTTPError:
            return ""

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll /readyz until 200; LaunchError with the log tail if it exits or times out."""

        async def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise LaunchError(f"{self.name} exited with {code}:\n{self.log()[-4000:]}")
            return (await self.readyz())[0] == 200

        try:
            await poll(ready, timeout_s=timeout_s, what=f"{self.name} /readyz 200")
        except LaunchError as exc:
            raise LaunchError(f"{exc}\n{self.log()[-4000:]}") from None

    async def kill9(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        if self.process is not None:
            await _wait_exit(self.process, 15)

    async def terminate(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after timeout_s, seconds taken)."""
        started = time.monotonic()
        if self.process is None:
            return None, 0.0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = await _wait_exit(self.process, timeout_s)
        return code, time.monotonic() - started

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (cleanup)."""
        if self.running:
            code, _ = await self.terminate(timeout_s=15)
            if code is None:
                await self.kill9()


# ---------------------------------------------------------------- the sandbox


@dataclass
class Sandbox:
    """`dialer sandbox` on a fixed port, restartable there; ground truth kept per lifetime."""

    options: dict[str, Any]
    log_dir: Path
    port: int = field(default_factory=free_port)
    current: SandboxProcess | None = None
    lifetimes: list[list[dict[str, Any]]] = field(default_factory=list)  # ground truth of past ones
    starts: int = 0

    @property
    def base_url(self) -> str:
        """The sandbox's own URL (not through any proxy)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> SandboxProcess:
        """The running sandbox."""
        if self.current is None:
            raise LaunchError("the sandbox is not running")
        return self.current

    def spawn(self) -> SandboxProcess:
        """Start `dialer sandbox` on self.port (not waiting for it)."""
        _check_entry_point()
        merged = {**DEFAULT_OPTIONS, **self.options, "host": "127.0.0.1", "port": self.port}
        argv = [str(DIALER), "sandbox", *command_line(merged)[3:]]  # the flags, not `-m sandbox`
        self.starts += 1
        log_path = self.log_dir / f"sandbox-{self.port}-{self.starts:02d}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - the project's own entry point
                argv,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        api_key = merged.get("api_key")
        sandbox = SandboxProcess(
            base_url=self.base_url,
            api_key=str(api_key or "any-key"),
            webhook_secret=str(merged.get("webhook_secret") or ""),
            process=popen,
            log_path=log_path,
            options=merged,
        )
        self.current = sandbox
        return sandbox

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> SandboxProcess:
        """Start `dialer sandbox` on self.port and wait for its health endpoint."""
        sandbox = self.spawn()
        popen = sandbox.process

        async def healthy() -> bool:
            if popen.poll() is not None:
                raise LaunchError(
                    f"sandbox exited with {popen.returncode}:\n{sandbox.log()[-3000:]}"
                )
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(self.base_url + "/_sandbox/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await poll(healthy, timeout_s=timeout_s, what="the sandbox's health endpoint")
        return sandbox

    async def stop(self, *, keep_truth: bool = True) -> None:
        """Terminate it; its ground truth is saved first (a restart forgets every call)."""
        sandbox, self.current = self.current, None
        if sandbox is None:
            return
        if keep_truth and sandbox.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                self.lifetimes.append(await sandbox.aground_truth())
        if sandbox.process.poll() is None:
            sandbox.process.terminate()
            if await _wait_exit(sandbox.process, 10) is None:
                sandbox.process.kill()
                await _wait_exit(sandbox.process, 10)

    async def ground_truths(self) -> list[list[dict[str, Any]]]:
        """Every lifetime's calls, the running one's included."""
        current = [await self.current.aground_truth()] if self.current is not None else []
        return [*self.lifetimes, *current]
