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
