"""The sandbox as a child process: started on a free port, waited for, stopped."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sandbox:
    """`dialer sandbox` as a child process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def counts(self) -> dict[str, Any]:
        """The sandbox's ground truth counters."""
        counts: dict[str, Any] = httpx.get(self.base_url + "/_sandbox/counts", timeout=5).json()
        return counts

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sandbox(
    directory: Path, api_key: str, secret: str, options: list[str] | None = None
) -> Sandbox:
    """Start the simulator on a free port (loopback webhooks allowed) and wait until it answers.

    `options` are more `dialer sandbox` flags, e.g. ["--clock-speed", "600"].
    """
    port = free_port()
    log_path = directory / f"sandbox-{port}.log"
    argv = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--api-key", api_key, "--webhook-secret", secret, "--allow-http-webhooks"]
    argv += options or []
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603 - our interpreter, no shell
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sandbox.base_url + "/_sandbox/health", timeout=1).status_code == 200:
                return sandbox
        time.sleep(0.05)
    sandbox.stop()
    raise RuntimeError(f"the sandbox did not start:\n{log_path.read_text(errors='replace')}")
