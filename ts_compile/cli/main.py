"""Command line: `python -m ts_compile demo|explain|bench ...` (also installed as `ts-compile`).

    demo                      full compute vs taylorseer vs FORA on a small FLUX (no download)
    explain MODEL_CLASS       regions, cuts and Taylor state of a diffusers transformer
    bench speed|quality ...   rerun a benchmark of the repository (its own arguments follow)

User mistakes print `error: ...` and `hint: ...` and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..options import COMPILERS, MAX_ORDER, OptionError, TaylorSeerOptions
from .demo_digits import DEFAULT_CHECKPOINT
from .errors import CliError, Parser, report, usage_hint

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
    parser = Parser(
        prog="python -m ts_compile",
        description="TaylorSeer feature forecasting for diffusion transformers "
                    "(torch.compile backend 'taylorseer').")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="compare eager, torch.compile, TaylorSeer and FORA on a small random FLUX",
        description="Sample a small random-weight FLUX transformer with a rectified-flow Euler "
                    "loop four ways (eager, plain torch.compile, TaylorSeer, FORA); print times, "
                    "speedups and errors against full compute, and write PNGs. Without a digits "
                    "checkpoint, --out shows the final latents (first 3 channels as RGB) of full "
                    "compute | TaylorSeer | FORA and the difference maps |TaylorSeer - full| and "
                    "|FORA - full|. With one, --out shows digit grids instead and the latents "
                    "picture goes to <out>_latents.png.",
        epilog="With a trained digits checkpoint (--checkpoint PATH, $TS_COMPILE_CHECKPOINT, or "
               f"{DEFAULT_CHECKPOINT} when run from the root of a repository checkout, where the "
               "quality benchmark's training writes it) the demo also samples 2 digits per class "
               "with full compute, TaylorSeer and FORA from the same noise: --out shows the three "
               "grids (row = class 0..9). The folder holds FluxTransformer2DModel.save_pretrained "
               "output (config.json, diffusion_pytorch_model.safetensors), "
               "conditioning.safetensors (encoder_hidden_states (11, T, D), pooled_projections "
               "(11, P); row 10 = unconditional) and sampler.json (image_size, patch, "
               "in_channels, shift, num_steps, guidance_scale, cfg 'batched' or 'none', "
               "pixel_range).")
    demo.add_argument("--steps", type=_positive_int, default=None,
                      help="denoising steps (50; the checkpoint's own count for its digits)")
    demo.add_argument("--compiler", choices=COMPILERS, default="inductor",
                      help="compiler for the plain compile and under TaylorSeer (inductor)")
    demo.add_argument("--size", choices=("demo", "test"), default="demo",
                      help="model size: 'demo' (tens of ms a step) or 'test' (tiny). With "
                           "'test' the whole demo took 0.5 to 3.5 min on a shared 2-core CPU "
                           "(16 generations of --steps steps: other load shows), 2 min with "
                           "--compiler eager (slower eager steps), and 1 to 2 min more with a "
                           "checkpoint's digits (--no-checkpoint skips them)")
    demo.add_argument("--out", default="ts_compile_demo.png", metavar="PATH",
                      help="where to write the picture: final latents and difference maps, "
                           "or with a checkpoint the digit grids (ts_compile_demo.png)")
    demo.add_argument("--interval", type=int, default=5,
                      help="after warm-up, compute every N-th step, forecast the rest (5)")
    demo.add_argument("--order", type=int, default=2,
                      help=f"Taylor order 0..{MAX_ORDER} (2); FORA is always order 0")
    demo.add_argument("--warmup", type=int, default=TaylorSeerOptions.warmup,
                      help="steps computed at the start of each generation "
                           f"({TaylorSeerOptions.warmup})")
    demo.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar on stderr")
    demo.add_argument("--checkpoint", metavar="PATH", default=None,
                      help="a trained FLUX digits checkpoint to sample digit grids from "
                           "(default: $TS_COMPILE_CHECKPOINT, else "
                           f"{DEFAULT_CHECKPOINT} of the current directory when it exists)")
    demo.add_argument("--no-checkpoint", action="store_true",
                      help="skip the digits even if a trained checkpoint exists")

    from .explain import add_parser as add_explain

    add_explain(commands)
    from .bench import BENCHMARKS

    bench = commands.add_parser(
        "bench", help="rerun a benchmark of the repository: " + ", ".join(BENCHMARKS),
        description="Run benchmarks/<NAME>.py of the repository checkout in the current "
                    "directory (or of the folder $TS_COMPILE_BENCHMARKS names) with the remaining "
                    "arguments (`bench speed --help` shows its own options). "
                    + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()) + ".")
    bench.add_argument("name", choices=tuple(BENCHMARKS), metavar="NAME",
                       help=" or ".join(BENCHMARKS))
    bench.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                       help="arguments for the benchmark script")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "bench" and not argv[1].startswith("-"):
        return _bench(argv[1], argv[2:])  # everything after the name is the script's
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the command they were given to, whose --help lists the right ones
            prog = f"{parser.prog} {args.command}" if args.command else parser.prog
            raise CliError(f"{prog}: unrecognized arguments: {' '.join(extra)}",
                           usage_hint(prog, ""))
    except CliError as err:  # a usage mistake: one line and a hint, no usage block
        return report(str(err), err.hint)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2

    if args.command == "explain":
        return _explain(args)
    if args.command == "bench":
        return _bench(args.name, args.args)
    return _demo(args)


def _explain(args: argparse.Namespace) -> int:
    from .explain import run_explain

    try:
        return run_explain(args)
    except CliError as err:
        if args.debug and err.__cause__ is not None:
            raise err.__cause__
        return report(str(err), err.hint)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _bench(name: str, argv: Sequence[str]) -> int:
    from .bench import run_bench

    try:
        return run_bench(name, argv)
    except CliError as err:
        return report(str(err), err.hint)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    from .demo import CheckpointError, resolve_checkpoint, run_demo

    try:
        checkpoint = resolve_checkpoint(args.checkpoint, disabled=args.no_checkpoint)
        run_demo(steps=args.steps, compiler=args.compiler, size=args.size, out_png=args.out,
                 interval=args.interval, order=args.order, warmup=args.warmup,
                 progress=args.progress, checkpoint=checkpoint)
    except CheckpointError as err:
        return report(str(err), err.hint)
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
