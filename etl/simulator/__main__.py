"""`python -m etl.simulator ...` is `cdr-etl simulate ...`: one command line for the
simulator (see `cdr-etl simulate --help`)."""

from __future__ import annotations

import sys

from etl.cli import main

if __name__ == "__main__":
    main(["simulate", *sys.argv[1:]])
