"""CPU speed benchmark: taylorseer vs eager, plain Inductor, diffusers' TaylorSeer hooks, cache-dit.

    python benchmarks/speed.py                       # the full table (tens of minutes on 2 cores)
    python benchmarks/speed.py --rows inductor,ts-N5-o2-block,diffusers-eager --repeats 3
    python benchmarks/speed.py --size tiny --steps 6 --repeats 1 --compiler eager   # seconds
    python benchmarks/speed.py --size tiny --free-tensors ...   # parameters as graph attributes
    python benchmarks/speed.py --size tiny --evict-mib 8 ...    # each step from emptied caches

A FLUX-shaped `FluxTransformer2DModel` (random weights; "cpu" size: 2 double + 4 single blocks,
4x32 heads, 1024 image + 32 text tokens, the setup of the peers measured in the reference notes)
runs a rectified-flow Euler sampler, x += (sigma_next - sigma) * v, for --steps steps.

Every row gets one untimed warm-up generation (it compiles: compile time = that generation minus
the timed median), then --repeats timed generations, alternated round-robin over the rows so that
a change in machine load hits every row alike. Per-step times come from the same timed
generations (perf_counter around each model call; CPU work is synchronous).

Rows (--rows, comma-separated; the plain Inductor baseline is always added):
  eager, inductor                          no cache
  ts-N{3,4,5,6}-o{1,2}-{block,paper}       backend="taylorseer", interval N, warm-up 3
  ts-dsched-o2-block                       backend="taylorseer" on diffusers' schedule (13/50)
  ts-adaptive-o2-block                     options.adaptive (min 1, max 8, warm-up 3), its
                                           tolerance calibrated at set-up (eager inner compiler,
                                           bisection) to compute as many steps as ts-N5-o2-block:
                                           the adaptive host work per step against the fixed
                                           schedule's
  ts-dsched-o2-block-mg                    the same with guard_filter_fn=ts_compile.skip_module_guards
                                           (Dynamo's module guards checked once per generation)
  diffusers-eager, diffusers-compiled      TaylorSeerCacheConfig(interval 5, warm-up 3, order 2,
                                           float32 factors) on whole blocks; compiled = whole-model
                                           torch.compile
  cachedit-eager, cachedit-compiled        cache-dit DBCache F1B0 + TaylorSeer calibrator (order 2)
                                           on diffusers' schedule (steps_computation_mask); only
                                           if `import cache_dit` works

FLOPs speedup: torch.utils.flop_counter.FlopCounterMode over one full step of the eager model and
one forecast step (taylorseer: the forecast graph run with the eager inner compiler; diffusers /
cache-dit: a whole hooked eager generation divided by its steps). It counts matmuls and attention
only: the elementwise polynomial is not counted (it is in the measured forecast-step time).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ts_compile  # noqa: E402
from ts_compile._compat import compile_isolated  # noqa: E402
from ts_compile.api import controller_of  # noqa: E402
from ts_compile.options import TaylorSeerOptions  # noqa: E402
from ts_compile.schedule import computed_steps  # noqa: E402
from ts_compile.cli.toy_models import SIZES as TOY_SIZES  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    # ~100 ms a step under plain Inductor on a quiet 2-core CPU (one thread: 111 ms eager).
    "cpu": dict(grid=32, text=32, config=dict(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=32,
        num_attention_heads=4, joint_attention_dim=256, pooled_projection_dim=256,
        axes_dims_rope=(8, 12, 12))),
    # a few ms a step: for the test suite (the demo's "test" model)
    "tiny": dict(grid=TOY_SIZES["test"]["grid"], text=TOY_SIZES["test"]["text_tokens"],
                 config=TOY_SIZES["test"]["config"]),
}
WARMUP = 3
DIFFUSERS_INTERVAL = 5
TS_ROWS = [f"ts-N{n}-o{o}-{c}" for c in ("block", "paper") for o in (1, 2) for n in (3, 4, 5, 6)]
MODULE_GUARDS_ROW = "ts-dsched-o2-block-mg"  # the same, with ts_compile.skip_module_guards
ADAPTIVE_ROW = "ts-adaptive-o2-block"  # options.adaptive, as many computed steps as N=5
ADAPTIVE_TARGET_ROW = "ts-N5-o2-block"
ALL_ROWS = (["eager", "inductor", *TS_ROWS, "ts-dsched-o2-block", MODULE_GUARDS_ROW, ADAPTIVE_ROW,
             "diffusers-eager",
             "diffusers-compiled", "cachedit-eager", "cachedit-compiled"])
FLOOR_ROW = "non-block"  # timed beside the rows, reported under the table
FLUX_BLOCK_IDS = [r"transformer_blocks\.\d+", r"single_transformer_blocks\.\d+"]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit code 2 (see main)
        raise UsageError(message)


# --- model and sampler ------------------------------------------------------------------------

def build_model(size: str):
    from diffusers import FluxTransformer2DModel

    spec = SIZES[size]
    cfg = spec["config"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FluxTransformer2DModel(guidance_embeds=False, **cfg).eval()
    g = torch.Generator().manual_seed(1)
    grid, text = spec["grid"], spec["text"]
    noise = torch.randn(1, grid * grid, cfg["in_channels"], generator=g)
    ctx = torch.randn(1, text, cfg["joint_attention_dim"], generator=g)
    pooled = torch.randn(1, cfg["pooled_projection_dim"], generator=g)
    ids = torch.zeros(grid, grid, 3)
    ids[..., 1] = torch.arange(grid)[:, None]
    ids[..., 2] = torch.arange(grid)[None, :]
    img_ids, txt_ids = ids.reshape(grid * grid, 3), torch.zeros(text, 3)

    def inputs(x: torch.Tensor, sigma: float) -> dict[str, Any]:
        return dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                    timestep=torch.tensor([sigma]), img_ids=img_ids, txt_ids=txt_ids,
                    return_dict=False)

    return model, noise, inputs


def sample(call: Callable, noise: torch.Tensor, inputs: Callable, steps: int,
           step_times: list[float] | None = None,
           after_first: Callable[[], None] | None = None) -> torch.Tensor:
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = noise.clone()
    for k in range(steps):
        kw = inputs(x, sigmas[k])
        t0 = time.perf_counter()
        v = call(**kw)[0]
        if step_times is not None:
            step_times.append(time.perf_counter() - t0)
        x = x + (sigmas[k + 1] - sigmas[k]) * v
        if k == 0 and after_first is not None:
            after_first()
    return x


def evicting(inputs: Callable, mib: int) -> Callable:
    """`inputs` that first writes `mib` MiB (--evict-mib): `sample` builds a step's inputs
    before it starts the step's clock, so each timed call starts from caches emptied as by
    other work on the machine, and the write itself is in no step's time."""
    if mib == 0:
        return inputs
    buffer = torch.zeros(mib * 2**20 // 4)

    def evicted(x: torch.Tensor, sigma: float) -> dict[str, Any]:
        buffer.add_(1.0)
        return inputs(x, sigma)

    evicted.buffer = buffer  # for tests
    return evicted


def diffusers_schedule(steps: int, interval: int, before: int) -> list[int]:
    """The steps diffusers' TaylorSeerCacheHook computes (tests/test_diffusers_parity.py)."""
    return [s for s in range(steps) if s < before or (s - before - 1) % interval == 0]


# --- memory -----------------------------------------------------------------------------------

def _proc_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


# --- rows -------------------------------------------------------------------------------------

class Row:
    def __init__(self, key: str, label: str, call: Callable, schedule: list[int], *,
                 compiled: bool, kind: str, reset: Callable[[], None] = lambda: None,
                 options: TaylorSeerOptions | None = None, cut: str | None = None) -> None:
        self.key, self.label, self.call, self.schedule = key, label, call, schedule
        self.compiled, self.kind, self.reset, self.options, self.cut = (
            compiled, kind, reset, options, cut)
        self.first_s = 0.0
        self.times: list[float] = []
        self.call_times: list[float] = []  # per generation: its model calls only (no sampler)
        self.step_times: list[list[float]] = []  # per generation: each call's time
        self.compute_step: list[float] = []
        self.forecast_step: list[float] = []
        self.graph_breaks = 0
        self.recompiles: int | str = 0
        self.peak_rss_mib: float | None = None
        self.flops_gen: float | None = None  # FLOPs of one generation
        self.state_bytes: int | None = None
        self.codes: list[str] = []
        self.computed_measured: int | None = None
        self.error: str | None = None
        self.frames_later = 0


def _ts_options(key: str, steps: int, compiler: str) -> TaylorSeerOptions:
    if key == ADAPTIVE_ROW:  # the tolerance is calibrated in make_rows
        return TaylorSeerOptions(order=2, warmup=WARMUP, num_steps=steps, compiler=compiler,
                                 adaptive={"tolerance": 0.05, "min_interval": 1,
                                           "max_interval": 8})
    if key in ("ts-dsched-o2-block", MODULE_GUARDS_ROW):
        return TaylorSeerOptions(schedule=diffusers_schedule(steps, DIFFUSERS_INTERVAL, WARMUP),
                                 order=2, num_steps=steps, compiler=compiler)
    n, o, cut = re.fullmatch(r"ts-N(\d+)-o(\d+)-(block|paper)", key).groups()
    return TaylorSeerOptions(interval=int(n), order=int(o), warmup=WARMUP, cut=cut,
                             num_steps=steps, compiler=compiler)


def _opts_dict(o: TaylorSeerOptions) -> dict[str, Any]:
    d = dict(order=o.order, num_steps=o.num_steps, compiler=o.compiler,
             cut=o.cut if isinstance(o.cut, str) else list(o.cut))
    if o.schedule is not None:
        d["schedule"] = sorted(o.schedule)
    elif o.adaptive is not None:
        d.update(warmup=o.warmup, adaptive=o.adaptive)
    else:
        d.update(interval=o.interval, warmup=o.warmup)
    return d


def adaptive_tolerance(model, noise, inputs, steps: int, options: TaylorSeerOptions,
                       target: int, notes: list[str]) -> TaylorSeerOptions:
    """`options` with the adaptive tolerance that computes `target` steps of the benchmark's
    generation (or the nearest count found): a geometric bisection over 1e-4..10, each try a
    generation with the eager inner compiler (the same decisions as Inductor's, to rounding)."""
    import dataclasses

    low, high, best = 1e-4, 10.0, None
    for _ in range(12):
        tolerance = math.sqrt(low * high)
        tried = dataclasses.replace(options, compiler="eager",
                                    adaptive=dataclasses.replace(options.adaptive,
                                                                 tolerance=tolerance))
        fn = compile_isolated(model, backend="taylorseer", options=_opts_dict(tried))
        sample(fn, noise, inputs, steps)
        count = len(ts_compile.stats(fn)["adaptive"]["last_generation"]["default"])
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (tolerance, count)
        if count == target:
            break
        low, high = (tolerance, high) if count > target else (low, tolerance)
    notes.append(f"{ADAPTIVE_ROW}: tolerance {best[0]:.4g} computes {best[1]} steps in the "
                 f"eager calibration (target {target}, {ADAPTIVE_TARGET_ROW}'s)")
    return dataclasses.replace(options, adaptive=dataclasses.replace(options.adaptive,
                                                                     tolerance=best[0]))


def make_rows(keys: list[str], model, steps: int, compiler: str, notes: list[str],
              noise=None, inputs=None) -> list[Row]:
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache

    every = list(range(steps))
    dsched = diffusers_schedule(steps, DIFFUSERS_INTERVAL, WARMUP)
    rows: list[Row] = []
    hooked = None
    cachedit = None
    for key in keys:
        if key == "eager":
            rows.append(Row(key, "eager", model, every, compiled=False, kind="plain"))
        elif key == "inductor":
            rows.append(Row(key, f"torch.compile ({compiler})",
                            compile_isolated(model, backend=compiler),
                            every, compiled=True, kind="plain"))
        elif key.startswith("ts-"):
            o = _ts_options(key, steps, compiler)
            if key == ADAPTIVE_ROW:
                target = len(computed_steps(_ts_options(ADAPTIVE_TARGET_ROW, steps, compiler),
                                            steps))
                o = adaptive_tolerance(model, noise, inputs, steps, o, target, notes)
            options = _opts_dict(o)
            if key == MODULE_GUARDS_ROW:
                options["guard_filter_fn"] = ts_compile.skip_module_guards
            fn = compile_isolated(model, backend="taylorseer", options=options)
            label = ("taylorseer diffusers' schedule O2 block" if key == "ts-dsched-o2-block"
                     else "taylorseer diffusers' schedule O2 block, skip_module_guards"
                     if key == MODULE_GUARDS_ROW
                     else f"taylorseer adaptive (tol {o.adaptive.tolerance:.3g}) O2 block"
                     if key == ADAPTIVE_ROW
                     else f"taylorseer N={o.interval} O={o.order} {o.cut}")
            # adaptive: the steps it chooses, set after its warm-up generation (_warm_up)
            schedule = [] if o.adaptive is not None else computed_steps(o, steps)
            rows.append(Row(key, label, fn, schedule, compiled=True, kind="ts",
                            reset=lambda fn=fn: ts_compile.reset(fn), options=o, cut=o.cut))
        elif key.startswith("diffusers-"):
            if hooked is None:
                hooked = copy.deepcopy(model)
                apply_taylorseer_cache(hooked, TaylorSeerCacheConfig(
                    cache_interval=DIFFUSERS_INTERVAL, disable_cache_before_step=WARMUP,
                    max_order=2, taylor_factors_dtype=torch.float32,
                    cache_identifiers=FLUX_BLOCK_IDS))
            fn = hooked if key == "diffusers-eager" else compile_isolated(
                hooked, backend=compiler)

            def call(fn=fn, **kw):
                with hooked.cache_context("cond"):
                    return fn(**kw)

            rows.append(Row(key, "diffusers hooks " + (
                "eager" if fn is hooked else f"torch.compile ({compiler})"),
                            call, dsched, compiled=fn is not hooked, kind="diffusers",
                            reset=hooked._reset_stateful_cache))
        elif key.startswith("cachedit-"):
            if cachedit is None:
                try:
                    cachedit = _cachedit_model(model, steps, dsched)
                except Exception as err:  # optional dependency: say why, keep going
                    cachedit = err
            if isinstance(cachedit, Exception):
                notes.append(f"{key}: row missing: cache-dit unavailable or failed "
                             f"({type(cachedit).__name__}: {str(cachedit).splitlines()[0][:160]})")
                continue
            cd_model, cd_reset = cachedit
            fn = cd_model if key == "cachedit-eager" else compile_isolated(
                cd_model, backend=compiler)
            rows.append(Row(key, "cache-dit F1B0+TaylorSeer " + (
                "eager" if fn is cd_model else f"torch.compile ({compiler})"),
                            fn, dsched, compiled=fn is not cd_model, kind="cachedit", reset=cd_reset))
    return rows


def non_block_floor_row(model: torch.nn.Module, steps: int, compiler: str) -> Row:
    """The method's floor for a forecast step: the same model with its block lists emptied
    (embedders, norm_out, proj_out), compiled the same way and timed in the same round-robin.
    Its output is not the model's; only its step time is used."""
    return Row(FLOOR_ROW, f"non-block step ({compiler})",
               compile_isolated(non_block_model(model), backend=compiler),
               list(range(steps)), compiled=True, kind="floor")


def non_block_model(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with both block lists emptied: a shallow copy sharing every other layer, so the
    floor reads the very weight tensors a forecast step reads (in a generation's rhythm, what
    the full step before it left in the caches). As gpu_perf.py builds its floor."""
    bare = copy.copy(model)
    bare._modules = dict(model._modules, transformer_blocks=torch.nn.ModuleList(),
                         single_transformer_blocks=torch.nn.ModuleList())
    return bare


class _InRhythm:
    """The floor called as a generation calls the model: plain Inductor's full model at the
    schedule's computed steps, the non-block model at the others, in step order. Unlike the
    floor bound's medians, each step then runs after what the step before it ran (the caches
    after a full step, a generation's start), as a forecasting row's steps do."""

    def __init__(self, full: Callable, bare: Callable, schedule: list[int]) -> None:
        self.full, self.bare, self.computed = full, bare, frozenset(schedule)
        self.step = 0

    def __call__(self, **kwargs: Any) -> Any:
        fn = self.full if self.step in self.computed else self.bare
        self.step += 1
        return fn(**kwargs)

    def reset(self) -> None:
        self.step = 0


def in_rhythm_floor_row(inductor: Row, floor: Row, schedule: list[int]) -> Row:
    """A row timing `_InRhythm` (both models are compiled already: no warm-up of its own)."""
    rhythm = _InRhythm(inductor.call, floor.call, schedule)
    return Row("floor-in-rhythm", "the floor in a generation's rhythm", rhythm, sorted(schedule),
               compiled=True, kind="rhythm", reset=rhythm.reset)


def floor_bound(row: Row, full_step: float, non_block_step: float, steps: int) -> float | None:
    """The fastest a schedule can run: computed steps at the plain compile's full step, the
    others at its non-block step (what a forecast step cannot avoid). For plain Inductor
    itself, every step at its own median step: how far its generation is from the bound shows
    what the start of a generation and the step-to-step spread cost any row."""
    if row.key == "inductor":
        return steps * full_step
    if row.kind not in ("ts", "diffusers", "cachedit"):
        return None
    return schedule_bound(len(row.schedule), full_step, non_block_step, steps)


def schedule_bound(computed: int, full_step: float, non_block_step: float, steps: int) -> float:
    """`computed` steps at the full step, the others at the non-block step."""
    return computed * full_step + (steps - computed) * non_block_step


def _cachedit_model(model, steps: int, dsched: list[int]):
    import logging

    import cache_dit
    from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.ERROR)
    m = copy.deepcopy(model)
    mask = [1 if s in dsched else 0 for s in range(steps)]

    def config():
        return dict(cache_config=DBCacheConfig(
            Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=WARMUP,
            residual_diff_threshold=1e9, num_inference_steps=steps,
            steps_computation_mask=mask, steps_computation_policy="static"),
            calibrator_config=TaylorSeerCalibratorConfig(taylorseer_order=2))

    cache_dit.enable_cache(m, **config())  # in place (it returns a list for a bare module)

    def reset():
        cache_dit.refresh_context(m, **config())

    return m, reset


# --- FLOPs ------------------------------------------------------------------------------------

def count_flops(fn: Callable, *args, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def ts_step_flops(model, noise, inputs, cut: str) -> tuple[int, int]:
    """(compute, forecast) FLOPs of one taylorseer step, graphs run with the eager compiler."""
    o = TaylorSeerOptions(schedule=[0], order=1, cut=cut, compiler="eager")
    fn = compile_isolated(model, backend="taylorseer", options=_opts_dict(o))
    fn(**inputs(noise, 1.0))  # compiles (eager inner compiler); step 0
    rt = controller_of(fn).runtimes[0]
    ts_compile.reset(fn)
    found: dict[str, int] = {}
    for name in ("compute_fn", "forecast_fn"):
        orig = getattr(rt, name)

        def wrapped(*a, orig=orig, name=name):
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as c:
                out = orig(*a)
            found[name] = c.get_total_flops()
            return out
        setattr(rt, name, wrapped)
    fn(**inputs(noise, 1.0))
    fn(**inputs(noise, 0.9))
    return found["compute_fn"], found["forecast_fn"]


# --- Inductor code ----------------------------------------------------------------------------

def kernel_report(code: str, table_count: int, rows: int) -> dict[str, Any]:
    """Kernels defined/launched in one Inductor output module and which read the Taylor tables
    (each table is `rows` = order + 1 inputs, one per row, just before the scalars)."""
    kernels = re.findall(r"^(cpp_fused_\w+) = async_compile", code, re.M)
    call_body = code[code.find("def call(args)"):] if "def call(args)" in code else code
    m = re.search(r"^\s+([\w, ]+) = args\s*$", call_body, re.M)
    names = [n.strip() for n in m.group(1).split(",") if n.strip()] if m else []
    row_names = names[-(table_count * rows + 1):-1] if names else []
    tables = [tuple(row_names[j * rows:(j + 1) * rows]) for j in range(table_count)]
    launches = re.findall(r"^\s+(cpp_fused_\w+)\((.*)\)\s*$", call_body, re.M)
    externs = re.findall(r"extern_kernels\.(\w+)\(", call_body)
    readers = {}
    for kname, argstr in launches:
        args = [a.strip() for a in argstr.split(",")]
        hit = [t for t in tables if any(row in args for row in t)]
        if hit:
            readers.setdefault(kname, []).extend(hit)
    return dict(kernels=kernels, launches=[k for k, _ in launches], externs=externs,
                tables=tables, table_kernels=readers)


def kernel_source(code: str, kname: str) -> str:
    start = code.find(f"{kname} = async_compile")
    end = code.find("''')", start)
    return code[start:end] if start >= 0 else ""


# --- the benchmark ----------------------------------------------------------------------------

def median(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.2f}"


def compile_probe(args) -> int:
    """Hidden mode: one cold compile (fresh Inductor cache dir set by the parent) of one row."""
    model, noise, inputs = build_model(args.size)
    with torch.no_grad():
        if args.compile_probe == "inductor":
            fn = torch.compile(model, backend="inductor")
        else:
            fn = torch.compile(model, backend="taylorseer", options=dict(
                interval=5, order=2, warmup=1, num_steps=1000))
        t0 = time.perf_counter()
        fn(**inputs(noise, 1.0))
        first = time.perf_counter() - t0
        steady = []
        for k in range(4):  # step 1 forecast, ..., step 5 computed: median of both kinds
            t0 = time.perf_counter()
            fn(**inputs(noise, 0.9))
            steady.append(time.perf_counter() - t0)
    print(f"COMPILE_PROBE {first - max(steady):.3f} {first:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50,
                        help="denoising steps per generation (50)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed generations per row after the untimed warm-up one (5)")
    parser.add_argument("--size", default="cpu",
                        help=f"model size: {' or '.join(SIZES)} (cpu: ~100 ms a step under "
                             "Inductor on 2 cores; tiny: a few ms, for tests)")
    parser.add_argument("--rows", default=",".join(ALL_ROWS),
                        help="comma-separated: " + ", ".join(ALL_ROWS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--compiler", default="inductor",
                        help="inner compiler of every compiled row: inductor, or eager (tests)")
    parser.add_argument("--host-calls", type=int, default=20000,
                        help="calls replayed (rounded down to whole generations) to time the "
                             "host work per call with the graphs stubbed out (20000)")
    parser.add_argument("--no-compile-probe", action="store_true",
                        help="skip the cold-compile measurement in subprocesses")
    parser.add_argument("--free-tensors", action="store_true",
                        help="set torch._dynamo.config.install_free_tensors = True for every "
                             "row: parameters become graph attributes, not graph inputs "
                             "(process-wide; docs/performance.md, \"Call overhead\")")
    parser.add_argument("--per-step", action="store_true",
                        help="also print each step's median time per row (which steps a "
                             "generation's time goes to) and the floor bound from those medians")
    parser.add_argument("--evict-mib", type=int, default=0,
                        help="before each timed model call, outside its time, write a buffer "
                             "of this many MiB: every step starts from caches another job "
                             "emptied (every row and floor alike; 0, the default: off)")
    parser.add_argument("--compile-probe", default=None, help=argparse.SUPPRESS)
    try:
        args = parser.parse_args(argv)
        if args.size not in SIZES:
            raise UsageError(f"--size must be one of {', '.join(SIZES)}, got {args.size!r}")
        if args.steps < 8:
            if args.steps < 1:
                raise UsageError(f"--steps must be >= 1, got {args.steps}")
        if args.repeats < 1:
            raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        if args.evict_mib < 0:
            raise UsageError(f"--evict-mib must be >= 0, got {args.evict_mib}")
        if args.compiler not in ("inductor", "eager"):
            raise UsageError(f"--compiler must be inductor or eager, got {args.compiler!r}")
        keys = [k.strip() for k in args.rows.split(",") if k.strip()]
        bad = [k for k in keys if k not in ALL_ROWS]
        if bad or not keys:
            raise UsageError(f"unknown row(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                             f"rows are {', '.join(ALL_ROWS)}")
    except UsageError as err:
        print(f"speed.py: error: {err}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.free_tensors:  # before any compile, so every row and the floor trace alike
        torch._dynamo.config.install_free_tensors = True
    if args.compile_probe:
        return compile_probe(args)
    if "inductor" not in keys:
        keys.insert(0, "inductor")  # the baseline of every ratio
    keys = [k for k in ALL_ROWS if k in keys]  # a fixed order
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # cold compiles: nothing from earlier runs
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ts_speed_inductor_")
    with torch.no_grad():
        return run(args, keys)


def run(args, keys: list[str]) -> int:
    """The whole benchmark: set-up, warm-up (compiles), timed round-robin, table, reports."""
    began = time.perf_counter()
    load_before = os.getloadavg()
    model, noise, inputs = build_model(args.size)
    _print_setup(args, model, load_before)
    notes: list[str] = []
    rows = make_rows(keys, model, args.steps, args.compiler, notes, noise, inputs)
    rows.append(non_block_floor_row(model, args.steps, args.compiler))
    for note in notes:
        print("note:", note)
    flops = _step_flops(model, noise, inputs, rows)
    _warm_up(rows, noise, inputs, args.steps, notes)
    rows = [r for r in rows if r.error is None]
    floor_row = next((r for r in rows if r.kind == "floor"), None)
    rows = [r for r in rows if r.kind != "floor"]
    by_key = {r.key: r for r in rows}
    # The floor in rhythm, on the schedule of the first taylorseer row with a fixed one.
    fixed = next((r for r in rows if r.kind == "ts" and r.options.adaptive is None), None)
    rhythm_row = (in_rhythm_floor_row(by_key["inductor"], floor_row, fixed.schedule)
                  if fixed is not None and floor_row is not None and "inductor" in by_key
                  else None)
    floors = [r for r in (floor_row, rhythm_row) if r is not None]
    for r in rows:  # FLOPs of the compiled peers = their eager twins'
        twin = by_key.get(r.key.replace("compiled", "eager"))
        if r.flops_gen is None and twin is not None:
            r.flops_gen = twin.flops_gen
    ts_before = {r.key: ts_compile.stats(r.call) for r in rows if r.kind == "ts"}
    references = _timed_generations(rows + floors, noise, evicting(inputs, args.evict_mib),
                                    args.steps, args.repeats)
    load_after = os.getloadavg()
    _read_counts(rows, ts_before, args.repeats, notes)
    _print_table(args, rows, by_key, floor_row, flops)
    if rhythm_row is not None:
        print_in_rhythm(rows, rhythm_row, by_key["inductor"], floor_row, args.steps)
    if args.per_step:
        print_per_step(rows, by_key.get("inductor"), floors, args.steps)
    if "ts-dsched-o2-block" in references and "diffusers-eager" in references:
        a, b = references["ts-dsched-o2-block"], references["diffusers-eager"]
        print(f"ts-dsched-o2-block vs diffusers-eager final latents: max |diff| "
              f"{float((a - b).abs().max()):.3g} (same schedule, order, cut)")
    extra_reports(args, rows, model, noise, inputs, median(by_key["inductor"].times), by_key)
    print(f"\nload average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
          f"process max RSS {_proc_kib('VmPeak') and _rusage_mib():.0f} MiB; "
          f"total wall time {time.perf_counter() - began:.0f} s")
    for note in notes:
        print("note:", note)
    return 0


def print_in_rhythm(rows: list[Row], rhythm: Row, inductor: Row, floor: Row, steps: int) -> None:
    """The floor in a generation's rhythm (`_InRhythm`) against each row on its schedule, and
    against the table's bound: the floor itself, called as a generation calls it, is that far
    from the bound its own two models give."""
    floor_time = median(rhythm.call_times)
    print(f"floor in rhythm: {floor_time * 1e3:.2f} ms per generation of model calls (median; "
          f"plain Inductor's full model at the {len(rhythm.schedule)} computed steps of the "
          f"schedule below, the non-block model at the others, called in step order, timed in "
          f"the same round-robin)")
    bound = schedule_bound(len(rhythm.schedule), median(inductor.compute_step),
                           median(floor.compute_step), steps)
    print(f"floor in rhythm: {bound / floor_time:.2f} of the table's floor bound "
          f"({bound * 1e3:.2f} ms)")
    for r in rows:
        if r.kind in ("ts", "diffusers", "cachedit") and sorted(r.schedule) == rhythm.schedule:
            print(f"{r.key}: {floor_time / median(r.call_times):.2f} of the floor in rhythm")


def print_per_step(rows: list[Row], inductor: Row | None, floors: list[Row],
                   steps: int) -> None:
    """Median time of each step index per row (C: a computed step of that row), and per row
    the floor bound built from the same per-step medians: plain Inductor's step k where the row
    computes, the non-block step k where it does not."""
    from tabulate import tabulate

    def per_step(row: Row) -> list[float]:
        return [median(g[k] for g in row.step_times) * 1e3 for k in range(steps)]

    floor_row = next((r for r in floors if r.kind == "floor"), None)
    cols = [r for r in rows if r.step_times] + floors
    meds = {r.key: per_step(r) for r in cols}
    table = [[k] + [f"{meds[r.key][k]:.3f}" + (" C" if r.kind != "floor" and k in r.schedule
                                               else "") for r in cols] for k in range(steps)]
    print("\nper step, median ms over the timed generations (C: computed by that row):")
    print(tabulate(table, headers=["step"] + [r.key for r in cols], tablefmt="github",
                   disable_numparse=True))
    if inductor is None or floor_row is None:
        return
    full, bare = meds[inductor.key], meds[floor_row.key]
    for r in rows:
        if r.kind not in ("ts", "diffusers", "cachedit") or not r.step_times:
            continue
        bound = sum(full[k] if k in r.schedule else bare[k] for k in range(steps))
        total = sum(meds[r.key])
        print(f"{r.key}: sum of per-step medians {total:.2f} ms, floor bound from the same "
              f"medians {bound:.2f} ms: {bound / total:.2f} of the floor")
        forecast = [k for k in range(steps) if k not in r.schedule]
        rhythm = next((f for f in floors
                       if f.kind == "rhythm" and f.schedule == sorted(r.schedule)), None)
        if forecast and rhythm is not None:  # the same steps of the floor in rhythm: non-block
            own, there = (median(meds[key][k] for k in forecast) for key in (r.key, rhythm.key))
            loop = median(bare[k] for k in forecast)
            print(f"{r.key}: forecast steps {own:.3f} ms (median of their per-step medians); "
                  f"the floor in rhythm's non-block steps at the same indices {there:.3f} ms "
                  f"({own / there:.2f}x), the non-block step in its own loop {loop:.3f} ms "
                  f"({own / loop:.2f}x)")


def _print_setup(args, model, load_before: tuple[float, float, float]) -> None:
    spec = SIZES[args.size]
    cfg = spec["config"]
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"FLUX-shaped FluxTransformer2DModel ({cfg['num_layers']} double + "
          f"{cfg['num_single_layers']} single blocks, {cfg['num_attention_heads']}x"
          f"{cfg['attention_head_dim']} heads, {params / 1e6:.2f}M params, random weights), "
          f"{spec['grid'] ** 2} image + {spec['text']} text tokens, {args.steps} Euler steps, "
          f"compiler={args.compiler}, {args.repeats} timed repeats, rows alternated"
          + (", install_free_tensors=True (every row)" if args.free_tensors else "")
          + (f", {args.evict_mib} MiB written before each timed call (--evict-mib)"
             if args.evict_mib else ""))


def _step_flops(model, noise, inputs, rows: list[Row]) -> tuple[int, dict[str, tuple[int, int]]]:
    """(full step FLOPs, {cut: (taylorseer compute step, forecast step)})."""
    full = count_flops(model, **inputs(noise, 1.0))
    ts_flops = {cut: ts_step_flops(model, noise, inputs, cut)
                for cut in sorted({r.cut for r in rows if r.kind == "ts"})}
    print(f"FLOPs (FlopCounterMode, matmul/attention only): full step {full / 1e9:.3f} G; "
          + "; ".join(f"taylorseer cut={c}: compute {a / 1e9:.3f} G, forecast {b / 1e9:.4f} G"
                      for c, (a, b) in ts_flops.items()))
    return full, ts_flops


def _warm_up(rows: list[Row], noise, inputs, steps: int, notes: list[str]) -> None:
    """One untimed generation per row (it compiles), Inductor's output code captured per row;
    a row that fails gets `error` set and a note."""
    from torch._inductor.graph import GraphLowering

    counters = torch._dynamo.utils.counters
    orig_save = GraphLowering.save_output_code
    current: list[Row] = []

    def save_output_code(code: str) -> None:
        if current:
            current[0].codes.append(code)

    GraphLowering.save_output_code = staticmethod(save_output_code)
    try:
        for row in rows:
            current[:] = [row]
            gb = sum(counters["graph_break"].values())
            first: list[int] = []

            def after_first():
                first.append(counters["frames"]["ok"])
            row.reset()
            t0 = time.perf_counter()
            try:
                if row.kind in ("diffusers", "cachedit") and row.key.endswith("eager"):
                    def flops_gen(row=row):
                        return sample(row.call, noise, inputs, steps, after_first=after_first)
                    row.flops_gen = count_flops(flops_gen)
                else:
                    sample(row.call, noise, inputs, steps, after_first=after_first)
                row.first_s = time.perf_counter() - t0
            except Exception as err:
                row.error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                notes.append(f"{row.key}: failed in its warm-up generation: {row.error}")
                print(f"note: {row.key} failed: {row.error}")
                continue
            if row.options is not None and row.options.adaptive is not None:
                # the steps it chose (the same noise each generation: the same steps)
                row.schedule = list(ts_compile.stats(row.call)["adaptive"]["last_generation"]
                                    ["default"])
            row.graph_breaks = sum(counters["graph_break"].values()) - gb
            row.frames_later = counters["frames"]["ok"] - first[0]
            print(f"  warm-up {row.label}: {row.first_s:.1f} s", flush=True)
    finally:
        GraphLowering.save_output_code = orig_save
        current.clear()


def _timed_generations(rows: list[Row], noise, inputs, steps: int,
                       repeats: int) -> dict[str, torch.Tensor]:
    """`repeats` generations per row, alternated round-robin so that a change in machine load
    hits every row alike; per-step times, RSS and frames counted on the rows. Returns each row's
    final latent of the first round."""
    counters = torch._dynamo.utils.counters
    references: dict[str, torch.Tensor] = {}
    rss_ok = True
    for rep in range(repeats):
        for row in rows:
            row.reset()
            step_times: list[float] = []
            if rep == 0 and rss_ok:
                rss0 = _proc_kib("VmRSS")
                rss_ok = reset_peak_rss() and rss0 is not None
            t0 = time.perf_counter()
            f0 = counters["frames"]["ok"]
            x = sample(row.call, noise, inputs, steps, step_times)
            row.times.append(time.perf_counter() - t0)
            row.call_times.append(sum(step_times))
            row.step_times.append(step_times)
            row.frames_later += counters["frames"]["ok"] - f0
            if rep == 0 and rss_ok:
                row.peak_rss_mib = (_proc_kib("VmHWM") - rss0) / 1024
            for k, dt in enumerate(step_times):
                (row.compute_step if k in row.schedule else row.forecast_step).append(dt)
            if rep == 0:
                references[row.key] = x
    return references


def _read_counts(rows: list[Row], ts_before: dict[str, dict], repeats: int,
                 notes: list[str]) -> None:
    """Recompiles, computed steps and state size per row (taylorseer rows from stats())."""
    for row in rows:
        # Dynamo compiles after a row's first step, all in its own turns
        row.recompiles = row.frames_later if row.compiled else "-"
        if row.kind != "ts":
            row.computed_measured = len(row.schedule)
            continue
        st = ts_compile.stats(row.call)
        if st["recompiles"] != row.recompiles:
            notes.append(f"{row.key}: stats() counts {st['recompiles']} recompiles")
        runs = repeats * max(st["graphs"], 1)
        row.computed_measured = (st["computed_steps"]
                                 - ts_before[row.key]["computed_steps"]) // runs
        row.state_bytes = st["state_bytes"]
        if st["fallbacks"]:
            notes.append(f"{row.key}: fell back: {'; '.join(st['fallbacks'])}")


def _flops_speedup(row: Row, steps: int, flops: tuple[int, dict[str, tuple[int, int]]]) -> float:
    full, ts_flops = flops
    if row.kind == "ts":
        comp, fc = ts_flops[row.cut]
        c = len(row.schedule)
        return steps * full / (c * comp + (steps - c) * fc)
    if row.flops_gen:
        return steps * full / row.flops_gen
    return steps / len(row.schedule)


TABLE_HEADERS = ["row", "method", "computed", "FLOPs speedup", "time s median [min-max]",
                 "speedup vs Inductor", "efficiency", "of floor", "compute step ms",
                 "forecast step ms", "forecast / non-block", "compile s", "peak RSS +MiB",
                 "Taylor state", "graph breaks", "recompiles"]


def _table_row(row: Row, steps: int, fs: float, base: float, full_step: float,
               non_block: float | None) -> list[str]:
    med = median(row.times)
    sp = base / med
    compile_s = max(row.first_s - med, 0.0) if row.compiled else None
    bound = None if non_block is None else floor_bound(row, full_step, non_block, steps)
    forecast = median(row.forecast_step)
    vs_non_block = None if forecast is None or non_block is None else forecast / non_block
    return [
        row.key, row.label, f"{row.computed_measured}/{steps}", f"{fs:.2f}",
        f"{med:.3f} [{min(row.times):.3f}-{max(row.times):.3f}]", f"{sp:.2f}",
        f"{sp / fs:.2f}", "-" if bound is None else f"{bound / median(row.call_times):.2f}",
        fmt_ms(median(row.compute_step)), fmt_ms(forecast),
        "-" if vs_non_block is None else f"{vs_non_block:.2f}",
        "-" if compile_s is None else f"{compile_s:.1f}",
        "n/a" if row.peak_rss_mib is None else f"{row.peak_rss_mib:.0f}",
        "-" if row.state_bytes is None else f"{row.state_bytes / 2**20:.2f} MiB",
        str(row.graph_breaks) if row.compiled else "-", str(row.recompiles)]


def _print_table(args, rows: list[Row], by_key: dict[str, Row], floor_row: Row | None,
                 flops: tuple[int, dict[str, tuple[int, int]]]) -> None:
    from tabulate import tabulate

    steps = args.steps
    base = median(by_key["inductor"].times)
    full_step = median(by_key["inductor"].compute_step)
    non_block = None if floor_row is None else median(floor_row.compute_step)
    table = [_table_row(row, steps, _flops_speedup(row, steps, flops), base, full_step, non_block)
             for row in rows]
    print()
    print(f"== {steps}-step generation, median of {args.repeats} alternated repeats ==")
    print(tabulate(table, headers=TABLE_HEADERS, tablefmt="github", disable_numparse=True))
    print("FLOPs speedup: steps x full-step FLOPs / FLOPs of a generation (FlopCounterMode: "
          "taylorseer from one compute and one forecast step of its eager graphs; diffusers and "
          "cache-dit from a whole eager hooked generation). efficiency = speedup vs Inductor / "
          "FLOPs speedup. of floor = floor-bound time / the row's model-call time per "
          "generation (the sum of its steps; the sampler's own work between calls is in "
          "neither), the floor-bound time being the computed steps x Inductor's full step + "
          "the other steps x the non-block step (below); for plain Inductor, all steps x "
          "its own median step. forecast / non-block = forecast step / non-block step. "
          "compile s = warm-up generation - median. peak RSS +MiB: VmHWM over the "
          "first timed generation minus VmRSS before it (process-wide; n/a where /proc/self/"
          "clear_refs is not writable). Inductor cache dir: "
          f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')} (fresh per run unless set).")
    if non_block is not None:
        print(f"non-block step: {non_block * 1e3:.3f} ms (the model with its block lists emptied, "
              f"{len(floor_row.compute_step)} steps timed in the same round-robin); Inductor's "
              f"full step {full_step * 1e3:.3f} ms")
    spreads = [max(r.times) / min(r.times) for r in rows]
    print(f"largest repeat spread (max/min) {max(spreads):.2f}")


def _rusage_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cached_code(compiled: Any):
    """The code object that holds Dynamo's cache entries for a compile_isolated result, or None."""
    if hasattr(compiled, "_orig_mod"):  # a compiled module: its forward
        return type(compiled._orig_mod).forward.__code__
    caller = getattr(compiled, "_torchdynamo_orig_callable", None)  # compile_isolated's fallback
    return getattr(getattr(caller, "__func__", None), "__code__", None)


def _frames_recompiles(row: Row) -> int | str:
    """Recompiles of a plain compiled row: Dynamo cache entries on the model's forward beyond 1."""
    fn = row.call
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    except ImportError:
        return "?"
    # the diffusers call wrapper closes over the compiled object
    compiled = [fn] + [cell for cell in (getattr(fn, "__defaults__", None) or ())]
    code = next((c for c in map(_cached_code, compiled) if c is not None), None)
    if code is None:
        return "?"
    try:
        entries = _debug_get_cache_entry_list(code)
    except Exception:
        return "?"
    return max(len(entries) - 1, 0) if entries else "?"


def whole_call_overhead(row: Row, noise, inputs, steps: int, calls: int) -> float:
    """Seconds per call of the compiled model with its graphs replaced by ones that return a
    stored output: what a call costs besides the graph (Dynamo + the runtime), replaying one
    generation's calls (each step's latent and time) through `row.call`."""
    rts = controller_of(row.call).runtimes
    kept = [(rt.compute_fn, rt.forecast_fn) for rt in rts]
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    x = noise.clone()
    outputs = {}

    def recording(rt, fn):
        def f(*a):
            out = fn(*a)
            outputs[rt] = out
            return out
        return f

    for rt, (compute_fn, _) in zip(rts, kept):
        rt.compute_fn = rt.forecast_fn = recording(rt, compute_fn)
    row.reset()
    generation = [inputs(x, sigmas[k]) for k in range(steps)]
    row.call(**generation[0])
    for rt in rts:
        out = outputs.get(rt)
        rt.compute_fn = rt.forecast_fn = lambda *a, out=out: out
        if rt.adaptive is not None and out is not None:  # the compute graph's norms last
            rt.forecast_fn = lambda *a, out=out[:-1]: out
    try:
        rounds = max(1, calls // steps)
        row.reset()
        t0 = time.perf_counter()
        for _ in range(rounds):
            row.reset()
            for kw in generation:
                row.call(**kw)
        return (time.perf_counter() - t0) / (rounds * steps)
    finally:
        for rt, (compute_fn, forecast_fn) in zip(rts, kept):
            rt.compute_fn, rt.forecast_fn = compute_fn, forecast_fn
        row.reset()


def host_work_report(row: Row, args, noise, inputs, steps: int) -> None:
    """Section (a) for one taylorseer row: the runtime's host work per call with the graphs
    stubbed out, the forecast graph alone, and a whole call with stubbed graphs."""
    controller = controller_of(row.call)
    rt = controller.runtimes[0]
    captured: dict[str, tuple] = {}
    calls_made: list[tuple] = []  # every call of one generation, in order
    fns = rt.compute_fn, rt.forecast_fn
    n_extra = len(rt.table_specs) * (rt.options.order + 1) + 1  # table rows, scalars

    norms: list[torch.Tensor] = []  # adaptive: each computed step's rows' norms, in order

    def capture(name, orig):
        def f(*a):
            captured.setdefault(name, a)
            calls_made.append(a[:-n_extra])
            out = orig(*a)
            if name == "c" and rt.adaptive is not None:
                norms.append(out[-1].clone())
            return out
        return f

    rt.compute_fn, rt.forecast_fn = capture("c", fns[0]), capture("f", fns[1])
    row.reset()
    sample(row.call, noise, inputs, steps)
    rt.compute_fn, rt.forecast_fn = fns
    user_args = calls_made[0]
    sentinel = object()
    rt.compute_fn = rt.forecast_fn = lambda *a: sentinel
    if rt.adaptive is not None:  # the recorded norms again, so it decides as it did
        replayed = iter(norms * (args.host_calls // max(len(norms), 1) + 2))
        rt.compute_fn = lambda *a: (sentinel, next(replayed))
    row.reset()
    calls = max(steps, args.host_calls // steps * steps)
    # The generation's own calls replayed in order (each step's latent and time), each
    # announced as Dynamo's call boundary does (the hook the backend puts in the
    # torch.compile context), so the measure is the whole host work per call.
    announce = getattr(controller, "enter_call", None)
    t0 = time.perf_counter()
    if announce is None:
        for i in range(calls):
            rt(*calls_made[i % steps])
    else:
        for i in range(calls):
            end = announce()
            rt(*calls_made[i % steps])
            end()
    per_call = (time.perf_counter() - t0) / calls
    rt.compute_fn, rt.forecast_fn = fns
    row.reset()
    noop = lambda *a: sentinel  # noqa: E731
    t0 = time.perf_counter()
    for i in range(calls):
        noop(*calls_made[i % steps])
    floor = (time.perf_counter() - t0) / calls
    print(f"{row.key}: {per_call * 1e6:.1f} us per call over {calls} calls, replaying one "
          f"generation's {steps} calls in order ({len(user_args)} graph inputs; a bare "
          f"Python call with the same arguments {floor * 1e6:.2f} us); target < 50 us: "
          f"{'met' if per_call < 50e-6 else 'NOT met'}")
    if "f" in captured and row.forecast_step:
        fargs = captured["f"]
        ts = []
        for _ in range(max(5, args.repeats * 3)):
            t0 = time.perf_counter()
            rt.forecast_fn(*fargs)
            ts.append(time.perf_counter() - t0)
        g = median(ts)
        whole = median(row.forecast_step)
        print(f"{row.key}: forecast graph alone {g * 1e3:.3f} ms; a forecast step through "
              f"torch.compile (Dynamo guards + runtime + graph) {whole * 1e3:.3f} ms; "
              f"difference {(whole - g) * 1e6:.0f} us")
    whole_call = whole_call_overhead(row, noise, inputs, steps, args.host_calls)
    print(f"{row.key}: a whole call through torch.compile with both graphs stubbed out "
          f"(Dynamo's frame entry, guards and argument passing + the runtime): "
          f"{whole_call * 1e6:.1f} us per call, of which the runtime {per_call * 1e6:.1f} us")


def extra_reports(args, rows: list[Row], model, noise, inputs, base: float,
                  by_key: dict[str, Row]) -> None:
    steps = args.steps
    ts_rows = [r for r in rows if r.kind == "ts"]

    # (a) host work of the runtime per call
    print("\n== (a) the runtime's own host work per call (GraphRuntime.__call__ with no-op graphs) ==")
    chosen = [r for r in ts_rows if r.key in ("ts-N5-o2-block", ADAPTIVE_ROW)] or ts_rows[:1]
    for row in chosen:
        host_work_report(row, args, noise, inputs, steps)
    if not chosen:
        print("no taylorseer row selected")

    # (b) kernels of the forecast graph
    print("\n== (b) Inductor's generated code of the taylorseer graphs ==")
    code_rows = [r for r in ts_rows if len(r.codes) >= 2]
    if args.compiler != "inductor":
        print("compiler is not inductor: no generated code")
    elif not code_rows:
        print("no taylorseer row compiled cold in this run (FX graph cache hits): no code captured")
    for cut in ("block", "paper"):
        r = next((r for r in code_rows if r.cut == cut and r.options.order == 2), None)
        if r is None or args.compiler != "inductor":
            continue
        st = ts_compile.stats(r.call)
        n_tables = st["live_outputs"]
        compute_code, forecast_code = r.codes[0], r.codes[1]
        fc = kernel_report(forecast_code, n_tables, r.options.order + 1)
        cc = kernel_report(compute_code, n_tables, r.options.order + 1)
        print(f"{r.key}: forecast graph: {len(fc['kernels'])} C++ kernels defined, "
              f"{len(fc['launches'])} launched, {len(fc['externs'])} extern calls "
              f"({', '.join(sorted(set(fc['externs']))) or 'none'}); "
              f"{n_tables} Taylor table(s) of {st['state_bytes'] / 2**20:.2f} MiB in total")
        readers = fc["table_kernels"]
        per_table = {t: sum(t in v for v in readers.values()) for t in fc["tables"]}
        print(f"  kernels reading a table: {len(readers)}; kernels per table: "
              f"{sorted(per_table.values()) if per_table else '-'} "
              f"({'each table read by exactly one kernel' if per_table and set(per_table.values()) == {1} else 'NOT one kernel per table'})")
        if cut == "block" and readers:
            kname = next(iter(readers))
            src = kernel_source(forecast_code, kname)
            loads = re.findall(r"in_ptr\d+\[[^\]]*\]|loadu\(in_ptr\d+[^;]*?\)", src)
            print(f"  the polynomial kernel {kname}: {len(loads)} loads "
                  f"({', '.join(loads[:8])}{', ...' if len(loads) > 8 else ''})")
        wr = cc["table_kernels"]
        print(f"{r.key}: compute graph: {len(cc['kernels'])} C++ kernels, "
              f"{len(cc['externs'])} extern calls; kernels taking a table: "
              f"{', '.join(f'{k}' for k in wr) or 'none'}")
        for k in wr:
            src = kernel_source(compute_code, k)
            outs = sorted(set(re.findall(r"out_ptr\d+", src)))
            ins = sorted(set(re.findall(r"in_ptr\d+", src)))
            print(f"    {k}: {len(ins)} inputs, {len(outs)} outputs "
                  f"({'fused with other work' if len(outs) + len(ins) > 3 else 'a separate kernel'})")

    # (c) compile time, cold, in subprocesses
    print("\n== (c) compile time: cold Inductor compile in a fresh process and cache dir ==")
    if args.no_compile_probe or args.compiler != "inductor":
        print("skipped (--no-compile-probe or compiler != inductor); see the compile s column")
    else:
        got = {}
        for which in ("inductor", "taylorseer"):
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix="ts_probe_"))
            cmd = [sys.executable, os.path.abspath(__file__), "--size", args.size,
                   "--compile-probe", which]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.free_tensors:
                cmd += ["--free-tensors"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            m = re.search(r"COMPILE_PROBE ([\d.]+) ([\d.]+)", proc.stdout)
            got[which] = float(m.group(1)) if m else None
            print(f"{which}: " + (f"{got[which]:.1f} s (first call {m.group(2)} s)" if m else
                                  f"probe failed: {proc.stderr.strip().splitlines()[-1:]}"))
        if got.get("inductor") and got.get("taylorseer"):
            ratio = got["taylorseer"] / got["inductor"]
            print(f"taylorseer / plain Inductor compile time: {ratio:.2f}x "
                  f"(target <= 2x: {'met' if ratio <= 2 else 'NOT met'})")

    # (d) FLUX.1-dev state memory, from shapes
    print("\n== (d) Taylor state for FLUX.1-dev at 1024x1024, order 2 (from shapes) ==")
    live = 4096 * 3072  # one live output: the last single block's image tokens, hidden 3072
    block = 3 * live * 4
    print(f"cut='block': (order + 1) x 1 live output x 4096 tokens x 3072 x 4 B (fp32) = "
          f"{block / 2**30:.3f} GiB")
    print("official TaylorSeer code (every branch output of every block, bf16): 6.012 GiB; "
          "cut='paper' bf16: 6.012 GiB (docs/models.md, `python benchmarks/state_memory.py`, "
          "traced on the meta device)")


if __name__ == "__main__":
    sys.exit(main())
