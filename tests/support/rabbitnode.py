"""A private RabbitMQ node for fault tests: its own name, ports and data directory.

The shared broker on 5672 is never touched. The node is started with `rabbitmq-server`
configured by RABBITMQ_* variables only (no plugins, a config file of its own, the data and
logs under a temporary directory), awaited with `rabbitmqctl await_startup`, and deleted at
the end. `stop_app` / `start_app` restart the broker application for "broker restart"
scenarios.

    node = RabbitNode.start(tmp_dir)
    node.url            # amqp://user:password@127.0.0.1:<port>/
    node.stop_app(); node.start_app()
    node.stop()         # stops the node and deletes its directory
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the `rabbitmq` user, who
# can read neither our temporary directory nor our Erlang cookie: use the real scripts.
_DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 120.0
CTL_TIMEOUT_S = 90.0
INSTALL_HINT = (
    "rabbitmq-server is not installed and could not be installed with apt-get "
    "(`apt-get install rabbitmq-server`, as .ci/services does); the fault suite needs a "
    "private RabbitMQ node of its own"
)


class RabbitNodeError(RuntimeError):
    """The private node could not be installed, started, checked or driven."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_root(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return argv
    if shutil.which("sudo"):
        return ["sudo", "-n", *argv]
    raise RabbitNodeError(INSTALL_HINT + " (not root, and no sudo)")


def _apt_install() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "rabbitmq-server"],
    ):
        done = subprocess.run(  # noqa: S603 - fixed argument lists
            _as_root(argv), env=env, capture_output=True, text=True, check=False, timeout=900
        )
        if done.returncode != 0:
            raise RabbitNodeError(
                f"{INSTALL_HINT}: {' '.join(argv)} failed:\n{done.stderr[-2000:]}"
            )


def scripts_dir(*, install: bool = True) -> Path:
    """Where `rabbitmq-server` and `rabbitmqctl` live; installs the package when absent."""
    if (_DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return _DEBIAN_SCRIPTS
    found = shutil.which("rabbitmq-server")
    if found and not Path(found).resolve().as_posix().startswith("/usr/sbin"):
        return Path(found).resolve().parent
    if not install:
        raise RabbitNodeError(INSTALL_HINT)
    _apt_install()
    if (_DEBIAN_SCRIPTS / "rabbitmq-server").exists():
        return _DEBIAN_SCRIPTS
    raise RabbitNodeError(INSTALL_HINT + " (installed, but no rabbitmq-server script found)")


@dataclass
class RabbitNode:
    """One running private node."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    bin_dir: Path
    user: str
    password: str
    restarts: list[tuple[float, float]] = field(default_factory=list)  # (stopped, started) times

    # ------------------------------------------------------------ start

    @classmethod
    def start(cls, base: Path, *, timeout_s: float = START_TIMEOUT_S) -> RabbitNode:
        """Start a fresh node under `base` (created) and wait until the broker runs."""
        bin_dir = scripts_dir()
        base.mkdir(parents=True, exist_ok=True)
        name = f"faults-{uuid.uuid4().hex[:10]}@localhost"
        amqp_port, dist_port = free_port(), free_port()
        while dist_port == amqp_port:
            dist_port = free_port()
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(
            "# the fault suite's private node\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (base / "rabbitmq-env.conf").write_text("# intentionally empty: nothing from /etc\n")
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(base),  # the Erlang cookie of this node and of our rabbitmqctl calls
            "RABBITMQ_NODENAME": name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
            "RABBITMQ_CTL_ERL_ARGS": loopback,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with (base / "server.out").open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - RabbitMQ's own script
                [str(bin_dir / "rabbitmq-server")],
                cwd=base,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped by id at the end
            )
        node = cls(
            name=name,
            amqp_port=amqp_port,
            dist_port=dist_port,
            base=base,
            env=env,
            process=process,
            bin_dir=bin_dir,
            user=f"faults-{uuid.uuid4().hex[:6]}",
            password=f"pw-{secrets.token_hex(12)}",
        )
        try:
            node._await_first_start(timeout_s)
            node.ctl("add_user", node.user, node.password)
            node.ctl("set_permissions", "-p", "/", node.user, ".*", ".*", ".*")
        except BaseException:
            node.stop()
            raise
        return node

    def _await_first_start(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pid_file = self.base / "node.pid"
        while not pid_file.exists():
            if self.process.poll() is not None:
                raise RabbitNodeError(
                    f"rabbitmq-server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"no pid file within {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.1)
        left = max(5.0, deadline - time.monotonic())
        self.ctl("wait", str(pid_file), "--timeout", str(int(left)), timeout_s=left + 10)
        self.ctl("await_startup", "--timeout", str(int(left)), timeout_s=left + 10)

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """AMQP URL with the node's own user (a distinctive password, for leak checks)."""
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.amqp_port}/"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output and log file."""
        parts = []
        for path in (self.base / "server.out", self.base / "log" / f"{self.name}.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------ rabbitmqctl

    def ctl(self, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
        """Run `rabbitmqctl -n NODE ARGS`; RabbitNodeError with its output when it fails."""
        argv = [str(self.bin_dir / "rabbitmqctl"), "-n", self.name, *args]
        try:
            done = subprocess.run(  # noqa: S603 - RabbitMQ's own CLI
                argv, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)}: no answer in {timeout_s} s"
            ) from exc
        if done.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done.stdout

    def feature_flags(self) -> dict[str, str]:
        """name -> state (enabled, disabled, ...)."""
        rows = json.loads(self.ctl("list_feature_flags", "--formatter", "json", "-q"))
        return {str(row["name"]): str(row["state"]) for row in rows}

    def queue_depths(self) -> dict[str, int]:
        """Messages per queue on this node."""
        rows = json.loads(self.ctl("list_queues", "--formatter", "json", "-q", "name", "messages"))
        return {str(row["name"]): int(row["messages"] or 0) for row in rows}

    def stop_app(self) -> float:
        """Stop the broker application (connections drop, queues stay on disk); its time."""
        self.ctl("stop_app")
        stopped = time.monotonic()
        self.restarts.append((stopped, float("nan")))
        return stopped

    def start_app(self) -> float:
        """Start the broker application again and wait until it accepts connections."""
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60")
        started = time.monotonic()
        if self.restarts and self.restarts[-1][1] != self.restarts[-1][1]:  # nan: open
            self.restarts[-1] = (self.restarts[-1][0], started)
        return started

    # ------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop the node (gracefully, else by killing its own process group), delete its data."""
        if self.process.poll() is None:
            with contextlib.suppress(RabbitNodeError):
                self.ctl("stop", str(self.base / "node.pid"), timeout_s=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)
