"""The command line's one error type: a user mistake, printed as one line plus a hint."""

from __future__ import annotations

import sys
from typing import TextIO


class CliError(Exception):
    """A user mistake: `python -m ts_compile` prints `error: <message>` and `hint: <hint>`."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def report(message: str, hint: str, stream: TextIO | None = None) -> int:
    """Print the two lines to stderr; the exit code of a usage error (2)."""
    print(f"error: {message}\nhint: {hint}", file=stream if stream is not None else sys.stderr)
    return 2
