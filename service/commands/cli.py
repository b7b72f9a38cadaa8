"""`dialer`: one entry point; each subcommand lives in the module that owns its work."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol, cast

from service.errors import ConfigError, ServiceUnreachableError

DESCRIPTION = """\
bland-dialer places phone calls through Bland AI for requests published to RabbitMQ, at most
once each, within concurrency and rate limits shared by every replica, and publishes each
call's id and outcome back as events. `dialer serve` runs the service (configured by DIALER_*
variables, see the README); the other commands publish requests, watch events, inspect the
backlog and dead letters, and run a local Bland simulator."""
EPILOG = """\
exit codes: 0 ok, 1 failure (e.g. invalid rows), 2 configuration error (a bad DIALER_*
variable or option, named in one line), 3 the broker or the database cannot be reached,
130 interrupted.
try it: `make demo`, or the README's "A local run in five minutes" (sandbox, serve, events,
publish, status)."""

# name -> (module, help). Each module exposes add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "service.commands.serve",
        "run the service: take call requests from RabbitMQ, place the calls, publish their "
        "outcomes (HTTP: health, metrics, Bland's webhooks)",
    ),
    "sandbox": ("sandbox.cli", "run the Bland API simulator"),
    "demo": ("service.commands.demo", "run the sandbox and the service together on sample calls"),
    "publish": ("service.commands.publish", "publish call requests from a JSON, JSONL or CSV file"),
    "events": ("service.commands.events", "print the event stream"),
    "status": (
        "service.commands.status",
        "backlog by state, active calls against the limits, last errors, outbox lag",
    ),
    "dead-letters": (
        "service.commands.dead_letters",
        "list, replay or purge what could not be processed",
    ),
    "schema": ("service.commands.schema", "write JSON Schemas and the AsyncAPI document"),
    "topology": ("service.commands.topology", "declare exchanges and queues"),
    "migrate": ("service.commands.migrate", "bring the ledger schema up to date"),
    "dnc": ("service.commands.dnc", "add, remove, list or import do-not-call numbers"),
}


class _Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> _Command | None:
    try:
        return cast(_Command, importlib.import_module(module))
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def package_version() -> str:
    """The installed distribution's version."""
    try:
        return version("bland-dialer")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, _Command]]:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="dialer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    loaded: dict[str, _Command] = {}
    for name, (module, help_text) in COMMANDS.items():
        command = _load(module)
        if command is None:
            continue
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(sub_parser)
        loaded[name] = command
    return parser, loaded


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        return commands[args.command].run(args)
    except ConfigError as exc:
        print(f"dialer: {exc}", file=sys.stderr)
        return 2
    except ServiceUnreachableError as exc:
        print(f"dialer: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
