"""The table's rows and how each one generates samples."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

WARMUP = 3  # the project default; the warm-up ablation rows vary it
STEPS = 50


@dataclasses.dataclass
class Row:
    id: str
    method: str  # full | fora | taylorseer | official | steps | diffusers | time | warmup
    cut: str | None = None
    interval: int | None = None
    order: int | None = None
    warmup: int | None = None
    steps: int = STEPS
    time: str | None = None  # "step" (default) | "timestep" | "sigma"
    diffusers: dict | None = None  # TaylorSeerCacheConfig kwargs (None = not a diffusers row)
    note: str = ""
    preset: str | None = None  # ts_compile's official-code preset (its recursion with it)
    forecaster: str | None = None  # options.forecaster (None: the default, "taylor")
    adaptive: dict | None = None  # options.adaptive (None: the fixed schedule)

    def ts_settings(self) -> dict[str, Any]:
        """The row's TaylorSeer settings: its preset's, then the row's own explicit values."""
        own = {k: v for k, v in (("interval", self.interval), ("order", self.order),
                                  ("warmup", self.warmup), ("forecaster", self.forecaster),
                                  ("adaptive", self.adaptive)) if v is not None}
        return {"preset": self.preset, **own} if self.preset else own

    def ts_options(self, task, compiler: str) -> dict[str, Any]:
        opts: dict[str, Any] = {**self.ts_settings(), "cut": self.cut, "compiler": compiler,
                                "num_steps": self.steps}
        if self.time not in (None, "step"):
            opts["time"] = self.time
            if self.time == "sigma":
                opts["alphas_cumprod"] = task.alphas_cumprod.tolist()
        return opts


def ts_row(order: int, n: int, cut: str, warmup: int = WARMUP, time: str | None = None,
           method: str | None = None) -> Row:
    name = "fora" if order == 0 else "ts"
    rid = f"{name}-N{n}-o{order}-{cut}"
    if warmup != WARMUP:
        rid += f"-w{warmup}"
    if time:
        rid += f"-t{time}"
    return Row(rid, method or ("fora" if order == 0 else "taylorseer"), cut, n, order, warmup,
               time=time)


def forecaster_row(forecaster: str, order: int, n: int, warmup: int = 1) -> Row:
    """A fixed schedule (every n-th step, warm-up `warmup`) with `forecaster`'s rows."""
    rid = f"{forecaster}-N{n}-o{order}-w{warmup}"
    return Row(rid, "forecaster", "block", n, order, warmup, forecaster=forecaster)


def adaptive_row(forecaster: str, order: int, tolerance: float, max_interval: int,
                 warmup: int = 1, min_interval: int = 1) -> Row:
    """Steps chosen per generation by the forecast's truncation-error estimate."""
    low = "" if min_interval == 1 else f"-min{min_interval}"
    rid = f"adaptive-{forecaster}-o{order}-tol{tolerance:g}{low}-max{max_interval}"
    return Row(rid, "adaptive", "block", None, order, warmup, forecaster=forecaster,
               adaptive={"tolerance": tolerance, "min_interval": min_interval,
                         "max_interval": max_interval})


# Issue #17's comparison at equal FLOPs: forecasters on one fixed schedule family, and adaptive
# steps swept over tolerances so that their FLOPs span the fixed rows'.
ADAPTIVE_TOLERANCES = (0.02, 0.05, 0.07, 0.1, 0.14, 0.2, 0.4)
# order 1's estimate (one order lower) is larger at the same step: its sweep goes further up
ORDER1_TOLERANCES = (0.05, 0.07, 0.1, 0.14, 0.17, 0.2, 0.24, 0.28, 0.34, 0.4)
# Bounded gaps: min_interval 1 spends a computed step right after the first one (one row: the
# estimate is 1), and long gaps late in sampling cost most; min 5 / max 8 was picked with
# benchmarks/adaptive_bounds.py (seed 7, 100 samples, both models, min 4-6 x max 7-9).
BOUNDED = (5, 8)
BOUNDED_TOLERANCES = {1: (0.1, 0.12, 0.14, 0.17, 0.2, 0.24, 0.28), 2: (0.03, 0.05, 0.07, 0.1)}


def study_rows(model: str, adaptive: bool = True) -> list[Row]:
    """The forecasters-and-adaptive study (`quality.py --study forecasters`), in run order."""
    rows = [Row("full", "full"), Row("steps-10", "steps", steps=10),
            Row("steps-8", "steps", steps=8), Row("steps-7", "steps", steps=7),
            forecaster_row("taylor", 0, 5)]
    for forecaster in ("taylor", "hermite", "newton"):
        for order, n in ((2, 5), (1, 5), (3, 5), (2, 6), (2, 7), (2, 8)):
            rows.append(forecaster_row(forecaster, order, n))
    if adaptive:
        for forecaster in ("taylor", "hermite", "newton"):
            for tol in ADAPTIVE_TOLERANCES:
                rows.append(adaptive_row(forecaster, 2, tol, 10))
        # order 1: its estimate (the first difference's term) tracks the true error better
        # (benchmarks/adaptive_signal.py)
        for tol in ORDER1_TOLERANCES:
            rows.append(adaptive_row("taylor", 1, tol, 10))
        for order, tolerances in BOUNDED_TOLERANCES.items():
            for tol in tolerances:
                rows.append(adaptive_row("taylor", order, tol, BOUNDED[1],
                                         min_interval=BOUNDED[0]))
    return rows


def preset_row(preset: str, cut: str, order: int | None = None) -> Row:
    """The official code's settings and recursion (ts_compile preset), at its order or `order`."""
    from ts_compile import TaylorSeerOptions

    settings = TaylorSeerOptions.from_preset(preset, **({} if order is None else {"order": order}))
    rid = f"{preset}-o{settings.order}-{cut}"
    return Row(rid, "official", cut, settings.interval, settings.order, settings.warmup,
               preset=preset)


def standard_rows(model: str, quick: bool = False, steps: int = STEPS) -> list[Row]:
    """In run order: the most important rows first (a cut-short run still has them)."""
    if quick:
        rows = [Row("full", "full"), ts_row(0, 5, "block"), ts_row(2, 5, "block"),
                preset_row("official-flux", "block"), Row("steps-4", "steps", steps=4),
                Row("diffusers-default", "diffusers", diffusers={})]
        for r in rows:
            if r.method != "steps":
                r.steps = steps
        return rows
    rows = [Row("full", "full")]
    rows += [Row(f"steps-{k}", "steps", steps=k) for k in (25, 18, 14, 12, 10, 8)]
    for cut in ("block", "paper"):
        for n in (6, 5, 3, 4):  # the paper's claim is at N = 5, 6: those first
            if n != 4:
                rows.append(ts_row(0, n, cut))
            for order in (1, 2, 3, 4):
                rows.append(ts_row(order, n, cut))
        if cut == "block":
            rows.append(Row("diffusers-default", "diffusers", diffusers={}))
            if model == "dit":
                # diffusers' default patterns hook nothing on DiT (attn1, not attn): name them
                rows.append(Row("diffusers-default-dit-modules", "diffusers", diffusers={
                    "cache_identifiers": [r"transformer_blocks\.\d+\.(attn1|ff)"]},
                    note="defaults, but hooking DiT's attn1 and ff"))
    # The official code's settings with its exact recursion (FLUX's keeps D_0 alone before its
    # last warm-up step): default order first, then the paper's FLUX order 2 / other DiT orders.
    if model == "flux":
        rows += [preset_row("official-flux", cut, order) for order in (None, 2)
                 for cut in ("block", "paper")]
    else:
        rows += [preset_row("official-dit", cut) for cut in ("block", "paper")]
        rows += [preset_row("official-dit", "block", order) for order in (2, 3)]
    times = ("timestep", "sigma") if model == "dit" else ("timestep",)
    for time in times:
        for n in (5, 6):
            for order in (1, 2, 3):
                rows.append(ts_row(order, n, "block", time=time, method="time"))
    for order, n, w in ((2, 5, 1), (2, 5, 2), (2, 5, 5), (0, 5, 1), (1, 5, 1), (3, 5, 1),
                        (2, 6, 1)):
        rows.append(ts_row(order, n, "block", warmup=w, method="warmup"))
    return rows


# --- running one row ---------------------------------------------------------------------------

def diffusers_schedule(steps: int, interval: int = 5, before: int = 3, after=None) -> list[int]:
    return [s for s in range(steps) if s < before or (s - before - 1) % interval == 0
            or (after is not None and s >= after)]


class Runner:
    """Makes the step function of a row; checks the schedule after each generation."""

    def __init__(self, task, compiler: str = "eager") -> None:
        self.task = task
        self.compiler = compiler

    def prepare(self, row: Row):
        """Returns (fn, regions_or_hooked_modules, expected computed steps, cleanup)."""
        import ts_compile

        model = self.task.model
        if row.method in ("full", "steps"):
            return model, [], list(range(row.steps)), lambda: None
        if row.diffusers is not None:
            from diffusers.hooks import HookRegistry
            from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache

            # copy.deepcopy(model) fails once the model has been compiled with taylorseer (the
            # backend leaves a WeakSet of controllers holding fake tensors on it): rebuild it.
            from .models import no_label_dropout

            hooked = type(model).from_config(model.config).eval()
            hooked.load_state_dict(model.state_dict())
            no_label_dropout(hooked)
            config = TaylorSeerCacheConfig(**row.diffusers)
            if hasattr(hooked, "enable_cache"):
                hooked.enable_cache(config)
            else:  # DiT is not a CacheMixin: what enable_cache would do
                apply_taylorseer_cache(hooked, config)
            names = [n for n, m in hooked.named_modules()
                     if getattr(m, "_diffusers_hook", None) is not None
                     and "taylorseer_cache" in m._diffusers_hook.hooks]
            registry = HookRegistry.check_if_exists_or_initialize(hooked)

            def fn(**kwargs):
                from diffusers.models.cache_utils import CacheMixin

                with CacheMixin.cache_context(hooked, "cond"):
                    return hooked(**kwargs)

            fn.reset = lambda: registry.reset_stateful_hooks(recurse=True)
            sched = diffusers_schedule(row.steps, config.cache_interval,
                                       config.disable_cache_before_step,
                                       config.disable_cache_after_step)
            if not names:
                sched = list(range(row.steps))
            return fn, names, sched, lambda: None
        torch._dynamo.reset()
        options = row.ts_options(self.task, self.compiler)
        # An option this ts_compile does not know fails here (recorded as the row's error), not
        # at the first call in the middle of the run.
        ts_compile.TaylorSeerOptions.from_compile_kwargs(None, options)
        compiled = torch.compile(model, backend="taylorseer", options=options, dynamic=False)
        compiled.reset = lambda: ts_compile.reset(compiled)
        if row.adaptive is not None:  # its steps are chosen while it runs
            return compiled, None, None, torch._dynamo.reset
        opts = ts_compile.TaylorSeerOptions.coerce({**row.ts_settings(), "num_steps": row.steps})
        return compiled, None, ts_compile.computed_steps(opts, row.steps), torch._dynamo.reset


def expected_speedup(computed: int, steps: int = STEPS) -> float:
    return steps / computed if computed else math.inf
