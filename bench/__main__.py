"""`python -m bench`: the pipeline benchmark."""

from __future__ import annotations

import sys

from bench.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
