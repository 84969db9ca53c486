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

    python benchmarks/forecasters.py --host-cost

prints instead what each forecaster adds per step outside the graphs (the graphs are the same for
all): the host's scalars (`Forecaster.forecast_scalars` / `compute_scalars`, order 2) and, for
time="timestep"/"sigma", the device ops of a forecast step's `apply_device_time`, here on CPU
tensors (best of 5, one thread).
"""

from __future__ import annotations

import argparse
import time
import timeit

import torch

import ts_compile
from ts_compile.cli.demo_digits import default_checkpoint, initial_noise, load_checkpoint, \
    sample_digits
from ts_compile.taylor import Forecaster, apply_device_time, scalars_vector

FORECASTERS = ({"forecaster": "taylor"}, {"forecaster": "hermite"},
               {"forecaster": "newton"})


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm().clamp_min(1e-12))


def host_cost(order: int = 2) -> None:
    """Microseconds per call of each forecaster's per-step work outside the graphs."""
    torch.set_num_threads(1)
    nodes, calls = [10, 5, 0], 100_000

    def best(fn, number):
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    print(f"order {order}: us per call (best of 5, one thread)")
    for kind in (f["forecaster"] for f in FORECASTERS):
        host = Forecaster(kind, order, 0.5)
        unit = Forecaster(kind, order, 0.5, unit_time=True)
        basis = unit.device_basis(torch.device("cpu"))
        scalars = scalars_vector(unit.forecast_scalars(12, nodes, order + 1))
        times, now = torch.tensor([0.5, 0.6]), torch.tensor(0.4)
        exponents = torch.arange(order + 1.0)
        forecast = best(lambda: host.forecast_scalars(12, nodes, order + 1), calls)
        compute = best(lambda: host.compute_scalars(15, nodes, order + 1), calls)
        device = best(lambda: apply_device_time(scalars, now, times, exponents, False, kind, basis),
                      calls // 10)
        print(f"{kind:8} host forecast_scalars {forecast:.2f}, compute_scalars {compute:.2f}; "
              f"device-time forecast ops (CPU tensors) {device:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="digits FLUX folder (default: the "
                        "quality benchmark's benchmarks/checkpoints/flux_digits)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--intervals", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--host-cost", action="store_true", help="time the per-step work "
                        "outside the graphs instead (no checkpoint needed)")
    args = parser.parse_args()
    if args.host_cost:
        host_cost()
        return
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
