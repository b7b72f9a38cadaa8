"""`python -m sandbox`: the same as `dialer sandbox`."""

from __future__ import annotations

import argparse
import sys

from sandbox import cli
from service.errors import ConfigError


def main() -> int:
    """Parse the sandbox's options and run it."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=cli.__doc__)
    cli.add_arguments(parser)
    try:
        return cli.run(parser.parse_args())
    except ConfigError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
