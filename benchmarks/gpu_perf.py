"""FLUX.1-dev-sized transformer on one device: plain Inductor (with and without CUDA graphs)
against `taylorseer` with mode="reduce-overhead". Called by gpu_check.py (its `perf` section).

What it measures, per row (one model, one set of inputs, side by side in one process):
  - 50-step time of a generation loop (median of --repeat generations; one device sync at the
    end of each generation, none per step),
  - per-step latency of the compute graph and of the forecast graph (CUDA events around each call,
    read after the generation; on CPU perf_counter),
  - peak memory of the generation, Taylor state bytes,
  - CUDA graphs: functions the cudagraph-tree manager holds, graphs recorded, Inductor's
    cudagraph skip counter (0 = nothing fell back), and host syncs seen per step by
    `torch.cuda.set_sync_debug_mode("warn")` during the timed generation (0 = no host sync).

The model: FluxTransformer2DModel with FLUX.1-dev's published widths (3072 hidden, 24 heads,
joint_attention_dim 4096, pooled 768, guidance embedding) and random bf16 weights; --double /
--single set the block counts (FLUX.1-dev: 19 / 38). Fewer blocks keep the compile times of the
three compiled copies inside the 8-minute budget; the script prints which it used. 1024x1024 is a
64x64 grid of packed latent tokens (4096) plus 512 text tokens.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from typing import Any

import torch
from tabulate import tabulate

import ts_compile
from ts_compile.api import controller_of
from ts_compile.cli.toy_models import FLUX_CONFIGS
from ts_compile.integrations.diffusers_inputs import flux_image_ids
from ts_compile.schedule import computed_steps

FLUX_DEV = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24,
                joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
# the block counts come from the command line (build)
TINY = dict(FLUX_CONFIGS["test"], pooled_projection_dim=16, guidance_embeds=True)


def build(device: str, tiny: bool, double: int, single: int, resolution: int, text_tokens: int):
    from diffusers import FluxTransformer2DModel

    config = dict(TINY if tiny else FLUX_DEV, num_layers=double, num_single_layers=single)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 directly: no fp32 copy of 12 B parameters
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**config).eval()
    finally:
        torch.set_default_dtype(default)
    grid = resolution // 16  # VAE /8, then 2x2 packing
    g = torch.Generator(device).manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, grid * grid, config["in_channels"], generator=g,
                                  device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(1, text_tokens, config["joint_attention_dim"],
                                          generator=g, device=device, dtype=dtype),
        pooled_projections=torch.randn(1, config["pooled_projection_dim"], generator=g,
                                       device=device, dtype=dtype),
        img_ids=flux_image_ids(grid, grid, device), txt_ids=torch.zeros(text_tokens, 3, device=device),
        guidance=torch.full((1,), 3.5, device=device, dtype=dtype), return_dict=False)
    return model, inputs, config


class StepTimer:
    """Per-call latency without a host sync per call: CUDA events, read after the loop."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.marks: list[tuple[Any, Any]] = []

    def around(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
        else:
            start = time.perf_counter()
            out = fn()
            end = time.perf_counter()
        self.marks.append((start, end))
        return out

    def millis(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in self.marks]
        return [(e - s) * 1e3 for s, e in self.marks]


def _cudagraph_facts() -> dict[str, Any]:
    from torch._dynamo.utils import counters

    facts = {"cudagraph_skips": counters["inductor"]["cudagraph_skips"]}
    try:
        from torch._inductor.cudagraph_trees import get_manager

        manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    except Exception:  # noqa: BLE001 - no CUDA, or internals moved
        manager = None
    if manager is not None:
        nodes, stack = 0, [n for roots in manager.roots.values() for n in roots]
        while stack:
            node = stack.pop()
            nodes += 1
            stack.extend(c for children in node.children.values() for c in children)
        facts.update(cudagraph_functions=len(manager.ids_to_funcs), cudagraphs_recorded=nodes)
    return facts


def _generation(model, inputs, steps: int, device: str, timer: StepTimer | None,
                sigmas: torch.Tensor) -> torch.Tensor:
    x = inputs["hidden_states"]
    for step in range(steps):
        kwargs = dict(inputs, hidden_states=x, timestep=sigmas[step:step + 1].to(x.dtype))

        def call():
            return model(**kwargs)[0]

        velocity = timer.around(call) if timer is not None else call()
        x = x + (sigmas[step + 1] - sigmas[step]).to(x.dtype) * velocity
    return x


def measure(name: str, model, inputs, steps: int, repeat: int, device: str,
            reset=None) -> dict[str, Any]:
    sigmas = torch.linspace(1.0, 0.0, steps + 1, device=device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = _generation(model, inputs, steps, device, None, sigmas)  # compile + warm-up
        if reset:
            reset()
        out = _generation(model, inputs, steps, device, None, sigmas)  # CUDA graphs recorded
        if reset:
            reset()
    _sync(device)
    warm_s = time.perf_counter() - t0
    times, timer, syncs = [], None, 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for r in range(repeat):
            timer = StepTimer(device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")
                t = time.perf_counter()
                out = _generation(model, inputs, steps, device, timer, sigmas)
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
                _sync(device)
                times.append(time.perf_counter() - t)
            syncs += sum("synchroniz" in str(w.message) for w in caught)
            if reset:
                reset()
    per_call = timer.millis()
    row = {"row": name, "generation s": statistics.median(times),
           "spread s": max(times) - min(times), "warm-up s": warm_s,
           "host syncs/step": syncs / (repeat * steps),
           "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
           "per_call_ms": per_call, "output": out.float()}
    return row


def _non_block_row(model, inputs, steps: int, repeat: int, device: str, compiler: str,
                   cuda_graphs: bool) -> float:
    """Median step (ms) of the model with its block lists emptied: what a forecast step cannot
    avoid (embedders, norm_out, proj_out), compiled the way the taylorseer row's graphs are."""
    bare = copy.copy(model)  # shallow: shares every other submodule and parameter
    bare._modules = dict(model._modules, transformer_blocks=torch.nn.ModuleList(),
                         single_transformer_blocks=torch.nn.ModuleList())
    if compiler == "eager":
        compiled = torch.compile(bare, backend="eager")
    else:
        compiled = torch.compile(bare, mode="reduce-overhead" if cuda_graphs else None)
    row = measure("non-block", compiled, inputs, steps, repeat, device)
    return statistics.median(row["per_call_ms"])


def _taylorseer_row(model, inputs, steps: int, repeat: int, device: str, options: dict,
                    floor: float, full: torch.Tensor | None) -> tuple[dict, dict, set[int]]:
    """One taylorseer row: its generation, compute and forecast step latency (the steps it
    computed: the schedule's, or those an adaptive row chose), state size, error vs `full`."""
    ts = torch.compile(model, backend="taylorseer", options=options)
    extra = ", ".join(f"{k}={v}" for k, v in options.items() if k in ("forecaster", "adaptive"))
    label = (f"taylorseer N={options.get('interval', '-')} O={options['order']}"
             + (f" {extra}" if extra else "")
             + (" + CUDA graphs" if options.get("mode") == "reduce-overhead" else ""))
    row = measure(label, ts, inputs, steps, repeat, device, reset=lambda: ts_compile.reset(ts))
    stats = ts_compile.stats(ts)
    if "adaptive" in options:  # the steps the timed (last) generation chose
        schedule = set(next(iter(stats["adaptive"]["last_generation"].values())))
        row["computed"] = len(schedule)
    else:
        schedule = set(computed_steps(ts_compile.TaylorSeerOptions(
            interval=options["interval"], order=options["order"], warmup=3), steps))
    calls = row["per_call_ms"]
    row["compute step ms"] = statistics.median([calls[s] for s in sorted(schedule)])
    forecast = [calls[s] for s in range(steps) if s not in schedule]
    row["forecast step ms"] = statistics.median(forecast) if forecast else None
    row["state GiB"] = stats["state_bytes"] / 2**30
    if full is not None:
        row["rel L2 vs Inductor"] = ((row["output"] - full).norm() / full.norm()).item()
    if row["forecast step ms"] is not None:
        row["forecast / non-block"] = row["forecast step ms"] / floor
    return row, stats, schedule


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(device: str, tiny: bool, double: int, single: int, resolution: int, text_tokens: int,
        steps: int, repeat: int, interval: int, order: int, compiler: str,
        variants: tuple[str, ...] = ()) -> list[dict]:
    """The rows above; `variants`: more taylorseer rows, "hermite", "newton" (forecasters) and
    "adaptive" (options.adaptive, tolerance 0.05, max interval 2 N)."""
    model, inputs, config = build(device, tiny, double, single, resolution, text_tokens)
    size = sum(p.numel() for p in model.parameters())
    print(f"model: FluxTransformer2DModel {'tiny' if tiny else 'FLUX.1-dev widths'}, "
          f"{double} double + {single} single blocks (FLUX.1-dev: 19 + 38), "
          f"{size / 1e9:.2f} B params, {next(model.parameters()).dtype}, "
          f"{resolution}x{resolution} -> {inputs['hidden_states'].shape[1]} image + "
          f"{text_tokens} text tokens, {steps} steps")
    cuda_graphs = device == "cuda"
    rows = []
    if compiler == "inductor":
        plain = torch.compile(model)
        rows.append(measure("Inductor", plain, inputs, steps, repeat, device))
        if cuda_graphs:
            plain_cg = torch.compile(model, mode="reduce-overhead")
            rows.append(measure("Inductor + CUDA graphs", plain_cg, inputs, steps, repeat, device))
    floor = _non_block_row(model, inputs, steps, repeat, device, compiler, cuda_graphs)
    options = {"interval": interval, "order": order, "warmup": 3, "compiler": compiler}
    if cuda_graphs:
        options["mode"] = "reduce-overhead"
    before = _cudagraph_facts() if cuda_graphs else {}
    full = rows[0]["output"] if rows else None  # plain Inductor's output
    row, stats, schedule = _taylorseer_row(model, inputs, steps, repeat, device, options, floor,
                                           full)
    rows.append(row)
    for r in rows[:-1]:
        r["compute step ms"] = statistics.median(r["per_call_ms"])
    base = rows[0]["generation s"]
    for r in rows:
        r["speedup"] = base / r["generation s"]
    if cuda_graphs:  # what the taylorseer row added to the cudagraph trees
        after = _cudagraph_facts()
        rows[-1].update({k: after[k] - before.get(k, 0) for k in after})
    flops_bound = steps / len(schedule)
    # Issue #17's costs: the other forecasters' forecast step, and adaptive steps (its computed
    # steps, signal reads and the syncs they took) against the fixed row above.
    for variant in variants:
        extra = ({"forecaster": variant} if variant != "adaptive" else
                 {"adaptive": {"tolerance": 0.05, "min_interval": 1,
                               "max_interval": 2 * interval}})
        voptions = {**options, **extra}
        if variant == "adaptive":  # adaptive chooses the steps: no interval beside it
            del voptions["interval"]
        vrow, vstats, _ = _taylorseer_row(model, inputs, steps, repeat, device, voptions,
                                          floor, full)
        vrow["speedup"] = base / vrow["generation s"]
        if variant == "adaptive":
            vrow.update({f"adaptive {k}": v for k, v in vstats["adaptive"].items()
                         if k in ("signal_reads", "syncs")})
        rows.append(vrow)
    print(tabulate([{k: v for k, v in r.items() if k not in ("per_call_ms", "output")}
                    for r in rows], headers="keys", floatfmt=".4g", missingval="-"))
    print(f"non-block step (the model with its block lists emptied, compiled like the "
          f"taylorseer row): {floor:.4g} ms; forecast step / non-block step "
          f"{row['forecast / non-block']:.2f} (goal <= 1.2)")
    print(f"computed steps {len(schedule)}/{steps}: FLOPs-bound speedup x{flops_bound:.2f}; "
          f"efficiency (speedup / bound) {row['speedup'] / flops_bound:.2f}; "
          f"stats: {stats['computed_steps']} computed, {stats['forecast_steps']} forecast calls, "
          f"{stats['recompiles']} recompiles, fallbacks {stats['fallbacks']}")
    if cuda_graphs:
        print("taylorseer row, cudagraph trees: "
              + ", ".join(f"{k} {row[k]}" for k in after)
              + " (expected: 2 functions, compute and forecast; 0 skips)")
    return rows
