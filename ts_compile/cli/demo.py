"""`python -m ts_compile demo`: TaylorSeer on a small random FLUX transformer, end to end.

The same rectified-flow Euler sampler (sigma linear from 1 to 0, fixed noise) runs four ways:

    eager           the model as it is, every step computed: the reference latents
    torch.compile   plain compile with the chosen compiler, every step computed: the speed baseline
    taylorseer      backend="taylorseer": computed steps refresh a Taylor table, the others forecast
    FORA            the same schedule with order 0: forecast steps reuse the last computed output

Every compiled variant is warmed up with one full generation (its compile time is that
generation's wall time minus the median timed one's); then all four are timed over fresh
generations, round-robin so that a change in machine load hits them alike, median of 3 each.
Errors are of the final latents against the eager ones. A PNG shows the final latents side by
side, with the difference maps on one colour scale (`images.py`).

With a trained digits checkpoint (`--checkpoint PATH`, $TS_COMPILE_CHECKPOINT, or
`benchmarks/checkpoints/flux_digits/` when run from the root of a repository checkout: the
quality benchmark's training writes it), the demo also samples a grid of digits (2 per class, same
noise) with full compute, taylorseer and FORA and the PNG shows the three grids side by side
(`demo_digits.py`); the latents picture then goes to `<out>_latents.png`. The timings stay on the
random model: the 8x8 digits model is too small for a timing to mean anything (a step is mostly
Python and framework overhead).

CPU timings of small models are sensitive to other load: OpenMP threads spin-wait, so a busy
machine can slow a multi-threaded run tenfold. `OMP_NUM_THREADS=1` gives steadier numbers there.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import torch

from ..api import reset, stats
from ..options import TaylorSeerOptions
from ..schedule import computed_steps, flops_speedup
from .demo_digits import (CheckpointError, initial_noise, load_checkpoint, resolve_checkpoint,
                          sample_digits)
from .images import digits_figure, latents_figure
from .toy_models import SIZES, sigma_schedule, tiny_flux

__all__ = ["CheckpointError", "resolve_checkpoint", "run_demo"]

REPEATS = 3
DEFAULT_STEPS = 50
DIGITS_PER_CLASS = 2


# --- the sampler ------------------------------------------------------------------------------

def sample(model: Callable, make_step_inputs: Callable[[int, int], dict[str, Any]], steps: int,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """One generation: x_{k+1} = x_k + (sigma_{k+1} - sigma_k) * model(x_k, sigma_k)."""
    sigmas = sigma_schedule(steps).tolist()
    x = make_step_inputs(0, steps)["hidden_states"].clone()
    for k in range(steps):
        inputs = make_step_inputs(k, steps)
        inputs["hidden_states"] = x
        velocity = model(**inputs)[0]
        x = x + (sigmas[k + 1] - sigmas[k]) * velocity
        if on_step is not None:
            on_step(k + 1)
    return x


# --- progress on stderr -----------------------------------------------------------------------

class Progress:
    """A one-line text bar rewritten with '\\r'; one finished line per method."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, width: int = 24) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._last = 0

    def show(self, label: str, fraction: float, note: str = "") -> None:
        if not self.enabled:
            return
        filled = min(self.width, int(self.width * fraction))
        line = f"{label:<26} [{'#' * filled}{'.' * (self.width - filled)}] {note}"
        self.stream.write("\r" + line.ljust(self._last))
        self.stream.flush()
        self._last = len(line)

    def finish(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
            self._last = 0


# --- the demo ---------------------------------------------------------------------------------

@dataclasses.dataclass
class _Method:
    label: str
    fn: Callable
    options: TaylorSeerOptions | None  # None: not a taylorseer compile
    compiled: bool
    first_s: float = 0.0  # wall time of the warm-up generation (includes compiling)
    times: list[float] = dataclasses.field(default_factory=list)
    latents: torch.Tensor | None = None
    stats_before: dict[str, Any] | None = None

    def fresh(self) -> None:
        if self.options is not None:
            reset(self.fn)


def run_demo(steps: int | None = None, compiler: str = "inductor", size: str = "demo",
             out_png: str = "ts_compile_demo.png", interval: int = 5, order: int = 2,
             warmup: int = TaylorSeerOptions.warmup, progress: bool = True, stream: TextIO | None = None,
             checkpoint: str | None = None) -> list[dict[str, Any]]:
    """Run the comparison, print the table and the PNG's path to `stream`; return the rows.

    One row per method (eager, plain compile, taylorseer, FORA), a dict with: method,
    computed_steps / forecast_steps (per generation, from `ts_compile.stats`), compile_s (None for
    eager), time_s (median), times_s (every timed generation), first_s (the warm-up generation),
    speedup (vs the plain compile), rel_l2 and max_abs (final latents vs eager's), final_latents.

    `steps` defaults to 50 (and to the checkpoint's own count for its digits). With
    `checkpoint` (a folder, see `ts_compile.demo_digits`) the digits are sampled too: three more
    rows (method "digits: ...", with rel_l2 / max_abs of the pixels against full compute, and
    `images`) follow, and the PNG shows the digit grids.

    Raises `ts_compile.OptionError` for invalid TaylorSeer settings, `FileNotFoundError` for
    a missing output folder and `CheckpointError` for a broken checkpoint, before any work starts.
    """
    out = stream if stream is not None else sys.stdout
    began = time.perf_counter()
    digits_steps = steps
    steps = DEFAULT_STEPS if steps is None else steps
    ts_options, fora_options = _demo_options(steps, size, compiler, interval, order, warmup)
    folder = os.path.dirname(os.path.abspath(out_png))
    if not os.path.isdir(folder):  # fail now, not after minutes of compiling
        raise FileNotFoundError(errno.ENOENT, "no such directory", out_png)
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None

    model, make_step_inputs = tiny_flux(seed=0, size=size)
    _print_setup(model, size, steps, ts_options, out)
    bar = Progress(progress)
    methods = _methods(model, ts_options, fora_options)
    with torch.no_grad():
        _warm_up(methods, make_step_inputs, steps, bar)
        _time_generations(methods, make_step_inputs, steps, bar, out)
    rows = _result_rows(methods, steps, out)
    print(format_table(rows), file=out)
    _note_unreliable_timings(rows, methods, ts_options, steps, out)
    latents_png = out_png
    if ckpt is not None:
        root, ext = os.path.splitext(out_png)
        latents_png = f"{root}_latents{ext or '.png'}"
        rows += _run_digits(ckpt, digits_steps or ckpt.num_steps, ts_options, fora_options,
                            bar, out, out_png)
    _write_latents(methods, SIZES[size]["grid"], latents_png, out)
    print(f"total wall time {time.perf_counter() - began:.1f} s", file=out)
    out.flush()
    return rows


def _demo_options(steps: Any, size: str, compiler: str, interval: int, order: int,
                  warmup: int) -> tuple[TaylorSeerOptions, TaylorSeerOptions]:
    """(taylorseer, FORA) options, every argument checked before any work starts."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(map(repr, SIZES))}, got {size!r}")
    ts_options = TaylorSeerOptions(interval=interval, order=order, warmup=warmup,
                                   compiler=compiler, num_steps=steps)  # validates, raises early
    fora_options = TaylorSeerOptions(interval=interval, order=0, warmup=warmup,
                                     compiler=compiler, num_steps=steps)
    return ts_options, fora_options


def _print_setup(model: torch.nn.Module, size: str, steps: int, ts_options: TaylorSeerOptions,
                 out: TextIO) -> None:
    grid, text = SIZES[size]["grid"], SIZES[size]["text_tokens"]
    params = sum(p.numel() for p in model.parameters())
    cfg = SIZES[size]["config"]
    print(f"FLUX ({cfg['num_layers']} double + {cfg['num_single_layers']} single blocks, "
          f"{cfg['num_attention_heads']}x{cfg['attention_head_dim']} heads, {params / 1e6:.2f}M "
          f"params, random weights), {grid * grid} image + {text} text tokens, {steps} Euler "
          f"steps, compiler={ts_options.compiler}, torch threads={torch.get_num_threads()}",
          file=out)
    schedule = computed_steps(ts_options, steps)
    shown = ", ".join(map(str, schedule[:12])) + (", ..." if len(schedule) > 12 else "")
    print(f"schedule (interval={ts_options.interval}, warmup={ts_options.warmup}): "
          f"{len(schedule)}/{steps} steps computed [{shown}], ideal speedup "
          f"x{flops_speedup(ts_options, steps):.2f}", file=out)
    out.flush()


def _methods(model: torch.nn.Module, ts_options: TaylorSeerOptions,
             fora_options: TaylorSeerOptions) -> list[_Method]:
    """eager (the reference), the plain compile (the speed baseline), taylorseer, FORA."""
    compiler = ts_options.compiler
    return [
        _Method("eager", model, None, compiled=False),
        _Method(f"torch.compile ({compiler})", torch.compile(model, backend=compiler), None,
                compiled=True),
        *(_Method(label, torch.compile(model, backend="taylorseer", options=_as_dict(options)),
                  options, compiled=True)
          for label, options in [
              (f"taylorseer (N={ts_options.interval}, O={ts_options.order})", ts_options),
              (f"FORA (N={fora_options.interval})", fora_options)]),
    ]


def _warm_up(methods: list[_Method], make_step_inputs: Callable, steps: int,
             bar: Progress) -> None:
    """One untimed generation each: eager's is the reference, the others compile."""
    for method in methods:
        note = "warm-up generation (compiles)" if method.compiled else "reference generation"
        method.fresh()
        bar.show(method.label, 0.0, f"{note} step 0/{steps}")
        start = time.perf_counter()
        method.latents = sample(method.fn, make_step_inputs, steps,
                                lambda k: bar.show(method.label, k / steps,
                                                   f"{note} step {k}/{steps}"))
        method.first_s = time.perf_counter() - start
        method.stats_before = stats(method.fn) if method.options is not None else None
        bar.finish()


def _time_generations(methods: list[_Method], make_step_inputs: Callable, steps: int,
                      bar: Progress, out: TextIO) -> None:
    """Timed generations, interleaved so a change in machine load hits every method alike.
    No progress output inside a timed loop."""
    rounds = len(methods) * REPEATS
    for r in range(REPEATS):
        for i, method in enumerate(methods):
            bar.show("timing", (r * len(methods) + i) / rounds,
                     f"round {r + 1}/{REPEATS}: {method.label}")
            method.fresh()
            start = time.perf_counter()
            x = sample(method.fn, make_step_inputs, steps)
            method.times.append(time.perf_counter() - start)
            if not torch.allclose(x, method.latents, rtol=1e-5, atol=1e-6):
                print(f"note: {method.label}: a timed generation differs from the warm-up "
                      f"one by up to {float((x - method.latents).abs().max()):.3g}", file=out)
            method.latents = x
    bar.show("timing", 1.0, f"{REPEATS} rounds of {len(methods)} generations")
    bar.finish()


def _result_rows(methods: list[_Method], steps: int, out: TextIO) -> list[dict[str, Any]]:
    """One row per method: its steps per generation, times, and errors against eager's."""
    rows: list[dict[str, Any]] = []
    for method in methods:
        time_s = sorted(method.times)[len(method.times) // 2]
        computed, forecast = steps, 0
        if method.options is not None:
            computed, forecast = _steps_per_timed_generation(method, out)
        rows.append(dict(method=method.label, computed_steps=computed, forecast_steps=forecast,
                         compile_s=max(method.first_s - time_s, 0.0) if method.compiled else None,
                         time_s=time_s, times_s=list(method.times), first_s=method.first_s,
                         final_latents=method.latents))
    baseline = rows[1]["time_s"]
    reference = methods[0].latents
    ref_norm = reference.norm()
    for row in rows:
        diff = row["final_latents"] - reference
        row["speedup"] = baseline / row["time_s"]
        row["rel_l2"] = float(diff.norm() / ref_norm)
        row["max_abs"] = float(diff.abs().max())
    return rows


def _steps_per_timed_generation(method: _Method, out: TextIO) -> tuple[int, int]:
    """(computed, forecast) steps of one timed generation, from the stats since the warm-up."""
    after = stats(method.fn)
    per_run = max(after["graphs"], 1) * REPEATS
    computed = (after["computed_steps"] - method.stats_before["computed_steps"]) // per_run
    forecast = (after["forecast_steps"] - method.stats_before["forecast_steps"]) // per_run
    if after["fallbacks"]:
        print(f"note: {method.label} fell back to a plain compile: "
              f"{'; '.join(after['fallbacks'])}", file=out)
    return computed, forecast


def _note_unreliable_timings(rows: list[dict[str, Any]], methods: list[_Method],
                             ts_options: TaylorSeerOptions, steps: int, out: TextIO) -> None:
    ideal = flops_speedup(ts_options, steps)
    spread = max(max(m.times) / min(m.times) for m in methods)
    if rows[2]["speedup"] > 1.1 * ideal or spread > 1.5:
        print(f"note: timings are unreliable: the measured speedup exceeds the FLOPs bound "
              f"x{ideal:.2f} or repeats spread x{spread:.2f}; another process was using the CPU. "
              "Rerun on a quiet machine (OMP_NUM_THREADS=1 steadies CPU timings).", file=out)


def _write_latents(methods: list[_Method], grid: int, png: str, out: TextIO) -> None:
    image, scale = latents_figure(methods[0].latents, methods[2].latents, methods[3].latents, grid)
    image.save(png, format="PNG")
    print(f"wrote {png}: final latents (first 3 channels, {grid}x{grid} tokens) "
          f"full compute | taylorseer | FORA | |taylorseer - full| | |FORA - full| "
          f"(diff maps: mean |diff| over channels, colour bar 0 to {scale:.3g})", file=out)


def _run_digits(ckpt, steps: int, ts_options: TaylorSeerOptions, fora_options: TaylorSeerOptions,
                bar: Progress, out: TextIO, out_png: str) -> list[dict[str, Any]]:
    """Sample the checkpoint's digits three ways, print their table, write the grids' PNG.

    The compiled variants use the eager inner compiler: the same passes, schedule and forecast
    graphs as under Inductor (outputs equal to float rounding), without two more Inductor
    compiles for a model whose timing would mean nothing anyway.
    """
    began = time.perf_counter()
    per_class = DIGITS_PER_CLASS
    ts_options = dataclasses.replace(ts_options, num_steps=steps, compiler="eager")
    fora_options = dataclasses.replace(fora_options, num_steps=steps, compiler="eager")
    batch = 10 * per_class * (2 if ckpt.sampler["cfg"] == "batched" else 1)
    print(f"\n{ckpt.describe()}: {per_class} digits per class, {steps} steps, batch {batch} "
          f"per call, same noise for every method, inner compiler eager. Not timed: at 16 tokens "
          f"a step is mostly framework overhead; the timings above are the meaningful ones.",
          file=out)
    out.flush()
    noise = initial_noise(ckpt, per_class)
    runs = [("full compute", ckpt.model, None),
            *((label, torch.compile(ckpt.model, backend="taylorseer", options=_as_dict(o),
                                   dynamic=False), o)
              for label, o in [(f"taylorseer (N={ts_options.interval}, O={ts_options.order})",
                                ts_options), (f"FORA (N={fora_options.interval})", fora_options)])]
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for label, fn, options in runs:
            if options is not None:
                reset(fn)
            name = f"digits: {label}"
            bar.show(name, 0.0, f"step 0/{steps}")
            images = sample_digits(fn, ckpt, noise, steps,
                                   lambda k, name=name: bar.show(name, k / steps,
                                                                 f"step {k}/{steps}"))
            bar.finish()
            computed, forecast = steps, 0
            if options is not None:
                st = stats(fn)
                graphs = max(st["graphs"], 1)
                computed, forecast = st["computed_steps"] // graphs, st["forecast_steps"] // graphs
                if st["fallbacks"]:
                    computed, forecast = steps, 0
                    print(f"note: {name} fell back to a plain compile: "
                          f"{'; '.join(st['fallbacks'])}", file=out)
            rows.append(dict(method=name, computed_steps=computed, forecast_steps=forecast,
                             images=images))
    reference = rows[0]["images"]
    for row in rows:
        diff = row["images"] - reference
        row["rel_l2"] = float(diff.norm() / reference.norm().clamp_min(1e-12))
        row["max_abs"] = float(diff.abs().max())
        row["mean_abs"] = float(diff.abs().mean())

    from tabulate import tabulate

    print(tabulate([[r["method"], f"{r['computed_steps']} / {r['forecast_steps']}",
                     f"{r['rel_l2']:.2e}", f"{r['max_abs']:.3f}", f"{r['mean_abs']:.4f}"]
                    for r in rows],
                   headers=["digits (pixels in [0, 1])", "computed / forecast", "rel L2 err",
                            "max abs err", "mean abs err"],
                   disable_numparse=True, colalign=("left", "right", "right", "right", "right")),
          file=out)
    titles = ["full compute", f"TaylorSeer N={ts_options.interval} O={ts_options.order}",
              f"FORA N={fora_options.interval}"]
    digits_figure(list(zip(titles, (r["images"] for r in rows))), per_class).save(out_png,
                                                                                 format="PNG")
    print(f"wrote {out_png}: digit grids full compute | taylorseer | FORA (row = class 0..9, "
          f"{per_class} samples each, same noise; {time.perf_counter() - began:.1f} s)", file=out)
    return rows


def _as_dict(options: TaylorSeerOptions) -> dict[str, Any]:
    return {"interval": options.interval, "order": options.order, "warmup": options.warmup,
            "compiler": options.compiler, "num_steps": options.num_steps}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    table = [[r["method"], f"{r['computed_steps']} / {r['forecast_steps']}", secs(r["compile_s"]),
              f"{r['time_s']:.3f}", f"x{r['speedup']:.2f}", f"{r['rel_l2']:.2e}",
              f"{r['max_abs']:.2e}"] for r in rows]
    headers = ["method", "computed / forecast", "compile s", "time s", "speedup vs compile",
               "rel L2 err", "max abs err"]
    return tabulate(table, headers=headers, disable_numparse=True,
                    colalign=("left", "right", "right", "right", "right", "right", "right"))
