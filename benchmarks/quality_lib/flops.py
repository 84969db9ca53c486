"""FLOPs of one denoising step (torch.utils.flop_counter), per module path.

FlopCounterMode counts matmuls and convolutions (aten.mm/addmm/bmm/convolution/...); on CPU its
scaled-dot-product-attention formulas do not cover the math kernel used here, so attention score
FLOPs (16 image tokens: about 2 % of a step) are not counted. Elementwise ops are not counted.
"""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def module_flops(model: torch.nn.Module, kwargs: dict) -> dict[str, int]:
    """{module path ('' = the whole model): FLOPs of one call}, paths as in named_modules()."""
    with FlopCounterMode(display=False) as counter:
        model(**kwargs)
    out: dict[str, int] = {}
    root = type(model).__name__
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        path = key[len(root):].lstrip(".") if key.startswith(root) else key
        out[path] = int(sum(ops.values()))
    return out


def forecast_step_flops(per_module: dict[str, int], regions: list[str], extra: int = 0) -> int:
    """FLOPs of a step where `regions` (module paths, '@k' call suffixes allowed) are forecast."""
    paths = sorted({re.sub(r"@\d+$", "", r) for r in regions})
    # drop regions nested in another region (counted once, by the outer one)
    outer = [p for p in paths if not any(p != q and p.startswith(q + ".") for q in paths)]
    skipped = sum(per_module.get(p, 0) for p in outer)
    return per_module[""] - skipped + extra


def generation_flops(full: int, forecast: int, computed_steps: int, steps: int) -> int:
    return computed_steps * full + (steps - computed_steps) * forecast


def measure_generation(task, runner, row) -> dict:
    """FLOPs of one whole generation of `row`, measured, for one cond + one uncond sample.

    Full compute, fewer steps and diffusers' hooks run eagerly under FlopCounterMode. A taylorseer
    row runs one generation to compile, then its compute and forecast graphs (the callables the
    backend hands to Dynamo) are wrapped so each call is counted: what a forecast step really
    costs after dead-code elimination (e.g. with the paper cut on FLUX's single blocks, attention
    and the MLP projection only fed the forecast proj_out and disappear), polynomial included.
    """
    from ts_compile.api import controller_of

    fn, names, sched, cleanup = runner.prepare(row)
    noise, labels = task.inputs(0, 1)
    per_call: list[tuple[str, int]] = []
    try:
        with torch.no_grad():
            if names is not None:  # eager: count everything
                if hasattr(fn, "reset"):
                    fn.reset()
                with FlopCounterMode(display=False) as counter:
                    task.sample(fn, noise, labels, row.steps)
                total = counter.get_total_flops()
            else:
                task.sample(fn, noise, labels, row.steps)  # compiles
                controller = controller_of(fn)

                def wrap(inner, kind):
                    def counted(*args):
                        with FlopCounterMode(display=False) as counter:
                            out = inner(*args)
                        per_call.append((kind, counter.get_total_flops()))
                        return out
                    return counted

                for rt in controller.runtimes:
                    rt.compute_fn = wrap(rt.compute_fn, "compute")
                    rt.forecast_fn = wrap(rt.forecast_fn, "forecast")
                fn.reset()
                task.sample(fn, noise, labels, row.steps)
                total = sum(f for _, f in per_call)
    finally:
        cleanup()
    out = {"generation_flops": int(total), "computed": len(sched)}
    if per_call:
        comp = [f for k, f in per_call if k == "compute"]
        fore = [f for k, f in per_call if k == "forecast"]
        out.update(compute_calls=len(comp), forecast_calls=len(fore),
                   compute_step_flops=max(comp) if comp else None,
                   forecast_step_flops=max(fore) if fore else None)
    return out
