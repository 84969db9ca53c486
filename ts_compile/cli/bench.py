"""`python -m ts_compile bench speed|quality [ARGS...]`: run a benchmark script of the repository.

The benchmarks are scripts of a repository checkout (`benchmarks/`), not part of the package, and
the package does not look for its own checkout: the command runs `benchmarks/<NAME>.py` of the
current directory (the checkout's root), or of the folder $TS_COMPILE_BENCHMARKS names. Each script
has `main(argv) -> int`; the remaining arguments go to it unchanged (`bench speed --help` prints
the script's own help)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Sequence

from .errors import CliError

BENCHMARKS = {"speed": "CPU speed: taylorseer vs plain Inductor, diffusers' hooks, cache-dit",
              "quality": "quality of the forecast against full compute (trained digits model)"}
ENV = "TS_COMPILE_BENCHMARKS"
CLONE_HINT = (f"run it from the root of a repository checkout (the benchmarks are not part of "
              f"the package), or set ${ENV} to the checkout's benchmarks folder")


def benchmarks_dir() -> str:
    """$TS_COMPILE_BENCHMARKS, else benchmarks/ of the current directory."""
    return os.environ.get(ENV) or os.path.join(os.getcwd(), "benchmarks")


def script_path(name: str) -> str:
    folder = benchmarks_dir()
    if not os.path.isdir(folder):
        raise CliError(f"no benchmarks folder at {folder}", CLONE_HINT)
    path = os.path.join(folder, f"{name}.py")
    if not os.path.isfile(path):
        raise CliError(f"benchmark script {path} is missing",
                       f"update the checkout (git pull); benchmarks here: "
                       f"{', '.join(sorted(f[:-3] for f in os.listdir(folder) if f.endswith('.py'))) or 'none'}")
    return path


def run_bench(name: str, argv: Sequence[str]) -> int:
    """Load benchmarks/<name>.py and return its `main(argv)`'s exit code."""
    if name not in BENCHMARKS:
        raise CliError(f"unknown benchmark {name!r}", f"use one of {', '.join(BENCHMARKS)}")
    path = script_path(name)
    spec = importlib.util.spec_from_file_location(f"ts_compile_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    prog = f"python -m ts_compile bench {name}"
    saved = sys.argv
    sys.argv = [prog, *argv]  # argparse's prog, and scripts that read sys.argv
    try:
        try:
            spec.loader.exec_module(module)
        except ImportError as err:
            raise CliError(f"{path} cannot be imported: {err}",
                           "install the benchmark extras: pip install -e '.[bench]'") from None
        main = getattr(module, "main", None)
        if not callable(main):
            raise CliError(f"{path} has no main(argv) function", "update the checkout (git pull)")
        try:
            takes_argv = bool(inspect.signature(main).parameters)
            code = main(list(argv)) if takes_argv else main()
        except SystemExit as exit_:  # argparse's --help and usage errors
            code = exit_.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
    finally:
        sys.argv = saved
    if code is None:
        return 0
    return code if isinstance(code, int) else 1
