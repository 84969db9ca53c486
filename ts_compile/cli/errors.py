"""The command line's one error type: a user mistake, printed as one line plus a hint."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import NoReturn, TextIO


class CliError(Exception):
    """A user mistake: `python -m ts_compile` prints `error: <message>` and `hint: <hint>`."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def report(message: str, hint: str, stream: TextIO | None = None) -> int:
    """Print the two lines to stderr; the exit code of a usage error (2)."""
    print(f"error: {message}\nhint: {hint}", file=stream if stream is not None else sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors raise CliError (one line and a hint) instead of printing the
    usage block and exiting; subcommand parsers inherit it (add_subparsers uses the parent's
    class)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}", usage_hint(self.prog, message))


def usage_hint(prog: str, message: str) -> str:
    """'did you mean X?' for a near miss among argparse's choices, and where the help is."""
    help_line = f"run `{prog} --help` for the allowed arguments"
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if found is None:
        return help_line + "."
    choices = re.findall(r"[^,' ]+", found.group(2))  # quoted or not, by Python version
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + help_line + "."
