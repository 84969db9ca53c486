"""Forecasters at the same schedule: error of each against full compute on the trained digits FLUX.

    python benchmarks/forecasters.py [--checkpoint benchmarks/checkpoints/flux_digits]
        [--steps 50] [--per-class 2] [--intervals 3 5] [--orders 1 2 3]

Samples the checkpoint's digits (the demo's sampler: flow-matching Euler with batched CFG, same
noise for every run) with full compute, then with `backend="taylorseer"` for every forecaster x
order x interval x time variable ("step", and "timestep": the sampler's sigma, unevenly spaced
under the checkpoint's shift), inner compiler eager (the same graphs and scalars as Inductor).
Prints one table: relative L2 error of the final pixels against full compute. Every run computes the
same steps, so the FLOPs are equal across forecasters within a row. One seed, a small batch: a
quick comparison, not the quality benchmark (docs/quality.md).
"""

from __future__ import annotations

import argparse
import time

import torch

import ts_compile
from ts_compile.cli.demo_digits import default_checkpoint, initial_noise, load_checkpoint, \
    sample_digits

FORECASTERS = ({"forecaster": "taylor"}, {"forecaster": "hermite"},
               {"forecaster": "newton"})


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm().clamp_min(1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="digits FLUX folder (default: the "
                        "quality benchmark's benchmarks/checkpoints/flux_digits)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--intervals", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint or default_checkpoint())
    noise = initial_noise(ckpt, args.per_class)
    began = time.perf_counter()
    with torch.no_grad():
        reference = sample_digits(ckpt.model, ckpt, noise, args.steps)
        names = [f["forecaster"] for f in FORECASTERS]
        print(f"{ckpt.describe()}: {args.steps} steps, {10 * args.per_class} digits, warm-up 1; "
              "rel L2 of the pixels against full compute")
        print(f"{'time':9} {'N':>2} {'O':>2} {'computed':>8}  "
              + "  ".join(f"{n:>9}" for n in names))
        for time_kind in ("step", "timestep"):
            for interval in args.intervals:
                for order in args.orders:
                    errors, computed = [], None
                    for forecaster in FORECASTERS:
                        options = dict(interval=interval, order=order, warmup=1,
                                       num_steps=args.steps, compiler="eager", time=time_kind,
                                       **forecaster)
                        torch._dynamo.reset()
                        model = torch.compile(ckpt.model, backend="taylorseer", options=options,
                                              dynamic=False)
                        images = sample_digits(model, ckpt, noise, args.steps)
                        stats = ts_compile.stats(model)
                        computed = stats["computed_steps"] // max(stats["graphs"], 1)
                        errors.append(rel_l2(images, reference))
                    print(f"{time_kind:9} {interval:>2} {order:>2} {computed:>8}  "
                          + "  ".join(f"{e:9.4f}" for e in errors))
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
