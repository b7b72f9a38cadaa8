"""`python -m service`: the same as the `dialer` command."""

from __future__ import annotations

import sys

from service.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
