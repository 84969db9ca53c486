"""`python -m ts_compile ...`: the command line, ts_compile/cli/."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
