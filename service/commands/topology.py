"""`dialer topology`: declare the exchanges and queues of the contract and print them."""

from __future__ import annotations

import argparse
import asyncio

from service.bus.connection import cli_settings
from service.bus.topology import declare_once


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer topology` takes its settings from DIALER_* variables."""
    parser.add_argument("--prefix", help="name prefix (default: DIALER_PREFIX or `dialer`)")
    parser.add_argument("--amqp-url", help="default: DIALER_AMQP_URL")


def run(args: argparse.Namespace) -> int:
    """Declare the exchanges and queues and print their names."""
    settings = cli_settings(args)
    names = asyncio.run(declare_once(settings))
    print(f"exchange {names.requests} (topic) -> quorum queue {names.requests} [#]")
    print(f"exchange {names.events} (topic)")
    print(f"exchange {names.dead} (topic) -> quorum queue {names.dead} [#]")
    return 0
