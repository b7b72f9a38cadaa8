"""`python -m bench.profiled OUT.prof serve`: the CLI under cProfile counting the main thread's CPU.

cProfile's default clock is the wall clock: on a loaded machine it charges the time the
process waited for a core to whatever ran next. The thread's CPU clock does not.
"""

from __future__ import annotations

import cProfile
import sys
import time

from service.commands.cli import main


def run() -> int:
    """Profile `dialer <args>` and write the stats when it exits."""
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["dialer", *args]
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        return main()
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(run())
