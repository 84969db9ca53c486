"""Command line: `python -m ts_compile demo [...]` (also installed as `ts-compile`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .options import COMPILERS, MAX_ORDER, OptionError

HELP_HINT = "hint: run `python -m ts_compile demo --help` for the allowed values."


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ts_compile",
        description="TaylorSeer feature forecasting for diffusion transformers "
                    "(torch.compile backend 'taylorseer').")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="compare eager, torch.compile, TaylorSeer and FORA on a small random FLUX",
        description="Sample a small random-weight FLUX transformer with a rectified-flow Euler "
                    "loop four ways (eager, plain torch.compile, TaylorSeer, FORA); print times, "
                    "speedups and errors, and write a PNG comparing the final latents.")
    demo.add_argument("--steps", type=_positive_int, default=50, help="denoising steps (50)")
    demo.add_argument("--compiler", choices=COMPILERS, default="inductor",
                      help="compiler for the plain compile and under TaylorSeer (inductor)")
    demo.add_argument("--size", choices=("demo", "test"), default="demo",
                      help="model size: 'demo' (~tens of ms a step) or 'test' (tiny)")
    demo.add_argument("--out", default="ts_compile_demo.png", metavar="PATH",
                      help="where to write the comparison PNG (ts_compile_demo.png)")
    demo.add_argument("--interval", type=int, default=5,
                      help="after warm-up, compute every N-th step, forecast the rest (5)")
    demo.add_argument("--order", type=int, default=2,
                      help=f"Taylor order 0..{MAX_ORDER} (2); FORA is always order 0")
    demo.add_argument("--warmup", type=int, default=3,
                      help="steps computed at the start of each generation (3)")
    demo.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage and the error
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2

    from .demo import run_demo

    try:
        run_demo(steps=args.steps, compiler=args.compiler, size=args.size, out_png=args.out,
                 interval=args.interval, order=args.order, warmup=args.warmup,
                 progress=args.progress)
    except OptionError as err:
        message = str(err).removeprefix("ts_compile: ")
        print(f"error: {message}\n{HELP_HINT}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename != args.out:
            raise
        print(f"error: cannot write {err.filename!r}: {err.strerror}\n"
              "hint: pass --out with a writable path.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
