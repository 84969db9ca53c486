"""Run the rows of one model over seeds; metrics against full compute and the real test digits."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

from ts_compile.calling import live_elements

from . import flops as F
from . import metrics as M
from .machine import load_average
from .rows import Row, Runner



def _ts_stats(fn):
    import ts_compile

    try:
        return ts_compile.stats(fn)
    except TypeError:
        return None


def run_model(task, rows: list[Row], seeds: list[int], n: int, classifier, real_feats,
              results_path: str | None, compiler: str = "eager", log=print,
              resume: bool = True) -> dict[str, Any]:
    """Run every row; returns (and saves after each row) {"meta": ..., "rows": {id: result}}."""
    samples_path = results_path.replace(".json", "_samples.pt") if results_path else None
    results: dict[str, Any] = {"meta": {}, "rows": {}}
    saved: dict[str, torch.Tensor] = {}
    meta = {"model": task.name, "seeds": seeds, "samples_per_seed": n, "compiler": compiler,
            "threads": torch.get_num_threads(), "guidance": task.guidance,
            "torch": torch.__version__}
    if resume and results_path and os.path.exists(results_path) and os.path.exists(samples_path):
        with open(results_path) as f:
            old = json.load(f)
        if {k: old["meta"].get(k) for k in ("seeds", "samples_per_seed")} == \
                {"seeds": seeds, "samples_per_seed": n}:
            results = old
            saved = torch.load(samples_path)
    results["meta"].update(meta)
    runner = Runner(task, compiler)
    per_module = F.module_flops(task.model, task.example_kwargs(1))  # batch 2 (cond + uncond)
    full_flops = per_module[""]
    results["meta"]["step_flops_per_sample"] = full_flops // 2
    base_steps = rows[0].steps  # the full-compute row's step count
    refs: dict[int, torch.Tensor] = {s: saved[f"full/seed{s}"] for s in seeds
                                     if f"full/seed{s}" in saved}
    for row in rows:
        done = row.id in results["rows"] and "error" not in results["rows"][row.id]
        if done and (row.id != "full" or len(refs) == len(seeds)):
            log(f"[{task.name}] {row.id}: done before, kept")
            continue
        if row.id != "full" and len(refs) != len(seeds):
            raise RuntimeError("the full-compute row must run first")
        try:
            fn, names, sched, cleanup = runner.prepare(row)
        except Exception as err:  # e.g. an option this ts_compile does not know yet
            log(f"[{task.name}] {row.id}: cannot run: {err}")
            results["rows"][row.id] = {"row": row.__dict__, "error": str(err)}
            continue
        per_seed: list[dict[str, Any]] = []
        schedule_ok = True
        chosen: list[int] = []  # computed steps per seed (adaptive rows differ per seed)
        ts = names is None
        regions: list[str] = []
        state_bytes = 0
        try:
            for seed in seeds:
                noise, labels = task.inputs(seed, n)
                if hasattr(fn, "reset"):
                    fn.reset()
                before = _ts_stats(fn) if ts else None
                start = time.perf_counter()
                with torch.no_grad():
                    x = task.sample(fn, noise, labels, row.steps)
                seconds = time.perf_counter() - start
                if ts:
                    after = _ts_stats(fn)
                    b_c = before["computed_steps"] if before else 0
                    b_f = before["forecast_steps"] if before else 0
                    got = (after["computed_steps"] - b_c, after["forecast_steps"] - b_f)
                    chosen.append(got[0])
                    if sched is None:  # adaptive: the steps are what it chose (counted)
                        if sum(got) != row.steps or after["fallbacks"]:
                            schedule_ok = False
                    elif got != (len(sched), row.steps - len(sched)) or after["fallbacks"]:
                        schedule_ok = False
                        log(f"[{task.name}] {row.id}: computed/forecast {got}, expected "
                            f"{(len(sched), row.steps - len(sched))}; fallbacks "
                            f"{after['fallbacks']}")
                    regions, state_bytes = after["regions"], after["state_bytes"]
                if row.id == "full":
                    refs[seed] = x
                ref = refs[seed]
                feats = M.features(classifier, x)
                per_seed.append(dict(
                    seed=seed, seconds=seconds, psnr=M.psnr(x, ref), ssim=M.ssim(x, ref),
                    rel_l2=M.rel_l2(x, ref), fd=M.frechet_of_sets(feats, real_feats),
                    acc=M.accuracy(classifier, x, labels)))
                saved[f"{row.id}/seed{seed}"] = x[:100].clone() if row.id != "full" else x.clone()
        finally:
            cleanup()
        # FLOPs per generation (batch of 2: one cond + one uncond sample); adaptive rows: the
        # mean over seeds of the steps they chose
        computed = len(sched) if sched is not None else sum(chosen) / len(chosen)
        if row.method in ("full", "steps"):
            gen = row.steps * full_flops
            forecast_flops = None
        else:
            if ts:
                order = row.order
                numel = live_elements(state_bytes, order) / n  # live outputs at batch 2
                poly, update = 2 * (order + 1) * numel, 2 * order * numel
                forecast_flops = F.forecast_step_flops(per_module, regions, int(poly))
                gen = computed * (full_flops + int(update)) + (row.steps - computed) * forecast_flops
            else:
                regions = names
                forecast_flops = F.forecast_step_flops(per_module, names)
                gen = computed * full_flops + (row.steps - computed) * forecast_flops
        result = dict(row=row.__dict__, computed=computed, computed_per_seed=chosen, schedule=sched,
                      schedule_ok=schedule_ok, regions=regions, state_bytes=state_bytes,
                      forecast_step_flops_fraction=(forecast_flops / full_flops
                                                    if forecast_flops is not None else None),
                      flops_speedup=base_steps * full_flops / gen, per_seed=per_seed,
                      load=load_average())
        results["rows"][row.id] = result
        fd = [p["fd"] for p in per_seed]
        log(f"[{task.name}] {row.id}: speedup x{result['flops_speedup']:.2f} "
            f"FD {sum(fd) / len(fd):.3f} PSNR {sum(p['psnr'] for p in per_seed) / len(per_seed):.2f} "
            f"acc {sum(p['acc'] for p in per_seed) / len(per_seed):.3f} "
            f"{sum(p['seconds'] for p in per_seed):.1f} s (load {load_average()})")
        if results_path:
            with open(results_path, "w") as f:
                json.dump(results, f, indent=1)
            torch.save(saved, samples_path)
    results["samples"] = saved
    return results
