"""Taylor state memory of the real diffusers transformers: cut="block" vs cut="paper" vs official.

    python benchmarks/state_memory.py [--order 2] [--models flux,dit,...]

Part 1 (tiny test configs of tests/diffusers_models.py, real weights not needed): blocks found,
regions per cut and live outputs, from `ts_compile.explain`.

Part 2 (the published configs, at a realistic resolution; `PRESETS` of
ts_compile/integrations/diffusers_inputs.py, which `python -m ts_compile explain --preset` uses
too): every model is built on the `meta`
device (no weights, no memory) and traced once by `ts_compile.explain` with meta inputs; the
state is computed from the traced shapes:

    state bytes = (order + 1) x sum over live outputs of numel x itemsize

- ts_compile block / paper: the live outputs `explain` reports, float32 state (the default
  `state_dtype`), and for the paper cut also bfloat16 (`state_dtype="bfloat16"`).
- official: the official TaylorSeer code caches every branch output of every block (the paper
  cut's modules, all their outputs, whether or not a later step reads them), in bfloat16. Those
  shapes are taken by forward hooks on one eager meta forward of the same model.

Batch 1 everywhere (one call of the denoiser; batched CFG doubles every number, a pipeline
calling the model twice per step keeps two tables).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ts_compile  # noqa: E402
from ts_compile.calling import state_bytes  # noqa: E402
from ts_compile.integrations.diffusers_inputs import (  # noqa: E402
    PRESETS, build_model, example_inputs)

GiB = 2 ** 30


# the benchmark's short names -> the package's published presets (configs, sizes, input builders
# in ts_compile/integrations/diffusers_inputs.py, shared with `python -m ts_compile explain`)
PRESET_OF = {"flux": "flux-dev", "dit": "dit-xl-2", "hunyuan_video": "hunyuan-video",
             "sd3": "sd3-medium", "pixart": "pixart-alpha", "wan": "wan2.1-1.3b"}


def _explain(model, kwargs, cut, order):
    # Each explain compiles the model's forward once more; without a reset, Dynamo's recompile
    # limit for that code object is reached after a few models and explain sees no graph at all.
    torch._dynamo.reset()
    reports = ts_compile.explain(model, options={"cut": cut, "order": order}, **kwargs)
    if len(reports) != 1 or reports[0].reason_not_applied:
        reasons = [r.reason_not_applied for r in reports]
        raise RuntimeError(f"{len(reports)} graphs, not applied: {reasons}")
    return reports[0]


def _official_bytes(model, kwargs, paths, order) -> int:
    """(order + 1) x every tensor output of every paper-cut module, bf16 (forward hooks)."""
    shapes = []

    def hook(module, args, out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        shapes.extend(o.shape for o in outs if isinstance(o, torch.Tensor))

    handles = [model.get_submodule(p).register_forward_hook(hook) for p in paths]
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        for h in handles:
            h.remove()
    return state_bytes(shapes, order, torch.bfloat16)


def _fmt(nbytes: int) -> str:
    return f"{nbytes / GiB:.3f} GiB" if nbytes >= GiB / 100 else f"{nbytes / 2**20:.2f} MiB"


def tiny_table(names, order):
    from tests.diffusers_models import BUILDERS

    rows = []
    for name in names:
        model, make_kwargs = BUILDERS[name]()
        kwargs = make_kwargs(0, 8)
        block = _explain(model, kwargs, "block", order)
        paper = _explain(model, kwargs, "paper", order)
        children = sorted({r.split(".")[-1] for r in paper.regions})
        rows.append([name, type(model).__name__, len(block.regions), len(block.live_outputs),
                     len(paper.regions), ", ".join(children), len(paper.live_outputs),
                     block.state_bytes, paper.state_bytes])
    return tabulate(rows, headers=["model", "class", "blocks (block-cut regions)",
                                   "block: live outputs", "paper: regions",
                                   "paper: branch modules", "paper: live outputs",
                                   "block: state bytes", "paper: state bytes"],
                    tablefmt="github")


def real_table(names, order):
    rows = []
    for name in names:
        preset = PRESETS[PRESET_OF[name]]
        title, setting = preset.title, preset.setting
        start = time.perf_counter()
        model = build_model(preset.cls_name, preset.config, device="meta")
        kwargs = example_inputs(preset.cls_name, model.config, preset.size, device="meta")
        try:
            block = _explain(model, kwargs, "block", order)
            paper = _explain(model, kwargs, "paper", order)
            paper_bf16 = state_bytes([s for _, _, s, _ in paper.live_outputs], order,
                                     torch.bfloat16)
            official = _official_bytes(model, kwargs, paper.regions, order)
            method = "meta trace"
        except Exception as err:  # noqa: BLE001 - report, do not hide
            rows.append([title, setting, f"FAILED: {type(err).__name__}: {err}"[:200]]
                        + [""] * 8)
            continue
        rows.append([title, setting, len(block.regions), len(block.live_outputs),
                     _fmt(block.state_bytes), len(paper.regions), len(paper.live_outputs),
                     _fmt(paper.state_bytes), _fmt(paper_bf16), _fmt(official),
                     f"{method} ({time.perf_counter() - start:.0f} s)"])
    return tabulate(rows, headers=["model", "setting", "blocks", "block: live",
                                   "block: state (fp32)", "paper: regions", "paper: live",
                                   "paper: state (fp32)", "paper: state (bf16)",
                                   "official (bf16)", "method"],
                    tablefmt="github")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--models", default="flux,dit,hunyuan_video,sd3,pixart,wan")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    names = args.models.split(",")
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=50)
    print(f"order {args.order}: state bytes = (order + 1) x sum of live output bytes "
          f"= {args.order + 1} x sum(numel x itemsize); batch 1\n")
    if not args.skip_tiny:
        print("## Tiny test configs (tests/diffusers_models.py), float32 state\n")
        print(tiny_table(names, args.order))
        print()
    print("## Published configs on the meta device\n")
    print(real_table(names, args.order))


if __name__ == "__main__":
    main()
