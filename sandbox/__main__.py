"""`python -m sandbox`: the same as `dialer sandbox`."""

from __future__ import annotations

import argparse
import sys

from sandbox import cli


def main() -> int:
    """Parse the sandbox's options and run it."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=cli.__doc__)
    cli.add_arguments(parser)
    return cli.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
