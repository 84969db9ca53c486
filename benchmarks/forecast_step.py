"""What a forecast step costs on the demo model, and what the non-finite guard adds to it.

    python benchmarks/forecast_step.py                       # demo-size tiny FLUX, Inductor, 1 thread
    python benchmarks/forecast_step.py --without-count       # ablation: no non-finite count
    python benchmarks/forecast_step.py --size test --compiler eager --repeat 20   # seconds (tests)

Prints the median time of the compiled forecast graph called alone (its captured arguments) and
of a forecast step through `torch.compile` (Dynamo guards + runtime + graph). `--without-count`
builds the forecast graph without the device-side count of non-finite forecast values (the
fallback to the last computed value stays), to measure the count's share; it is an ablation for
this script only, not an option of the backend.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch

import ts_compile
from ts_compile.api import controller_of
from ts_compile.taylor import nonfinite_slots
from ts_compile.cli.toy_models import SIZES, tiny_flux


def _drop_forecast_count(order: int) -> None:
    guards = importlib.import_module("ts_compile.passes.insert_guards")
    count = guards._count_nonfinite
    forecast_slot = nonfinite_slots(order)[0]

    def computed_only(graph, scalars, slot, finite):
        if slot != forecast_slot:
            count(graph, scalars, slot, finite)

    guards._count_nonfinite = computed_only


def run(size: str, compiler: str, repeat: int, order: int, without_count: bool) -> dict:
    if without_count:
        _drop_forecast_count(order)
    model, make_kwargs = tiny_flux(size=size)
    compiled = torch.compile(model, backend="taylorseer",
                             options={"interval": 5, "warmup": 3, "order": order,
                                      "compiler": compiler})
    steps = 10  # warm-up 3, N=5: steps 0, 1, 2, 7 computed, the other six forecast
    captured = {}
    with torch.no_grad():
        for step in range(steps):  # compile both graphs
            compiled(**make_kwargs(step, steps))
        runtime = controller_of(compiled).runtimes[0]
        forecast_fn = runtime.forecast_fn

        def capture(*args):
            captured["args"] = args
            return forecast_fn(*args)

        runtime.forecast_fn = capture
        ts_compile.reset(compiled)
        for step in range(steps):
            compiled(**make_kwargs(step, steps))
        runtime.forecast_fn = forecast_fn
        args = captured["args"]
        alone = []
        for _ in range(repeat):
            t = time.perf_counter()
            forecast_fn(*args)
            alone.append(time.perf_counter() - t)
        through = []
        for _ in range(max(1, repeat // 20)):
            ts_compile.reset(compiled)
            for step in range(steps):
                kwargs = make_kwargs(step, steps)
                before = runtime.forecast_steps
                t = time.perf_counter()
                compiled(**kwargs)
                if runtime.forecast_steps > before:
                    through.append(time.perf_counter() - t)
    return {"forecast graph alone ms": 1e3 * statistics.median(alone),
            "forecast step via torch.compile ms": 1e3 * statistics.median(through)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--compiler", choices=("inductor", "eager"), default="inductor")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--without-count", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.size, args.compiler, args.repeat, args.order, args.without_count)
    label = "without the non-finite count" if args.without_count else "as shipped"
    print(f"{args.size} tiny FLUX, {args.compiler}, order {args.order}, {args.threads} thread(s), "
          f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
