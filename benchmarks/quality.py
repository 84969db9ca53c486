"""Quality benchmark: TaylorSeer, FORA, fewer steps and diffusers' hooks on two models
trained here on scikit-learn's digits, against full compute; tables and figures in docs/quality.md.

    python benchmarks/quality.py                      # the whole table (both models; long)
    python benchmarks/quality.py --models dit         # one model (run two processes in parallel)
    python benchmarks/quality.py --render-only        # rebuild docs/quality.md from saved results
    python benchmarks/quality.py --quick --out /tmp/q # tiny random models, seconds

Train the models first (checkpoints are committed): benchmarks/train_dit.py, benchmarks/train_flux.py.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "quality_results")
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/quality.py) -->", "<!-- END GENERATED -->"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/quality.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny random-weight models, 1 seed, 8 samples, 6 rows (a smoke test)")
    p.add_argument("--models", default="dit,flux", help="comma list of dit, flux (dit,flux)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of noise seeds (0,1,2)")
    p.add_argument("--samples", type=int, default=200, help="samples per seed (200)")
    p.add_argument("--rows", default="", help="only rows whose id matches this regular "
                   "expression (re.search; the full row always runs)")
    p.add_argument("--tag", default="", help="suffix of the results file, so that several "
                   "processes can run disjoint --rows of one model at once (merged when rendering)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs"),
                   help="folder for quality.md and img/quality_*.png (docs/)")
    p.add_argument("--results", default=None,
                   help="folder for the raw results JSON (benchmarks/quality_results/)")
    p.add_argument("--compiler", default="eager", choices=("eager", "inductor"),
                   help="inner compiler of the taylorseer rows (eager: same numbers, fast compile)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--flops-only", action="store_true",
                   help="measure every row's generation FLOPs (batch of one cond + one uncond "
                   "sample; the compiled graphs' calls counted) into quality_results/flops_*.json")
    p.add_argument("--study", choices=("forecasters",), default=None,
                   help="run a study instead of the main table: 'forecasters' = issue #17's "
                   "forecasters x fixed/adaptive schedules at equal FLOPs (its own results "
                   "study_forecasters_<model>.json and section of quality.md)")
    p.add_argument("--render-only", action="store_true", help="no sampling: rebuild the doc")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="rerun rows already in the results file")
    return p


def _quick_tasks(names):
    import torch

    from quality_lib import models
    from quality_lib.sampling import DitTask, FluxTask

    tasks = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if "dit" in names:
            cfg = dict(models.DIT_CONFIG, num_layers=2, num_attention_heads=2,
                       attention_head_dim=16)
            tasks["dit"] = DitTask(models.build_dit(cfg).eval())
        if "flux" in names:
            cfg = dict(models.FLUX_CONFIG, num_layers=1, num_single_layers=2,
                       num_attention_heads=2, attention_head_dim=16, joint_attention_dim=32,
                       pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
            cond = models.FluxConditioning(2, 32, 32)
            tasks["flux"] = FluxTask(models.build_flux(cfg).eval(),
                                     cond.encoder_hidden_states.detach(),
                                     cond.pooled_projections.detach())
    return tasks


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from quality_lib import metrics as M
    from quality_lib import models
    from quality_lib.bench import run_model
    from quality_lib.data import load_digits_split
    from quality_lib.rows import standard_rows
    from quality_lib.sampling import load_task

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m not in ("dit", "flux"):
            print(f"error: unknown model {m!r} (dit, flux)", file=sys.stderr)
            return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    n = args.samples
    results_dir = args.results or RESULTS
    if args.quick:
        seeds, n = seeds[:1], min(n, 8)
        results_dir = args.results or os.path.join(args.out, "quality_results")
    os.makedirs(results_dir, exist_ok=True)
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)

    x_tr, y_tr, x_te, y_te = load_digits_split()
    clf_path = os.path.join(models.CHECKPOINTS, "classifier_digits.safetensors")
    if args.quick and not os.path.exists(clf_path):
        classifier = M.train_classifier(x_tr, y_tr, steps=50)
    else:
        classifier = M.load_or_train_classifier(clf_path, x_tr, y_tr)
    real = M.features(classifier, x_te)
    clf_info = {"heldout_acc": M.accuracy(classifier, x_te, y_te),
                "fd_train_vs_test": M.frechet_of_sets(M.features(classifier, x_tr), real),
                "test_images": len(y_te)}
    # the floor at this sample size: real train digits (n of them) against the test split
    g = torch.Generator().manual_seed(0)
    sub = torch.randperm(len(y_tr), generator=g)[:n]
    clf_info[f"fd_train{n}_vs_test"] = M.frechet_of_sets(M.features(classifier, x_tr[sub]), real)
    all_results = {}
    if args.study:
        return run_study(args, names, seeds, n, classifier, real, clf_info, results_dir)
    if args.flops_only:
        tasks = _quick_tasks(names) if args.quick else {m: load_task(m) for m in names}
        for m in names:
            measure_flops(tasks[m], m, results_dir, args, quick=args.quick)
        return 0
    if not args.render_only:
        tasks = _quick_tasks(names) if args.quick else {m: load_task(m) for m in names}
        for m in names:
            task = tasks[m]
            rows = standard_rows(m, quick=args.quick, steps=12 if args.quick else 50)
            if args.rows:
                rows = [r for r in rows if r.id == "full" or re.search(args.rows, r.id)]
            path = os.path.join(results_dir, f"quality_{m}{args.tag}.json")
            began = time.perf_counter()
            res = run_model(task, rows, seeds, n, classifier, real, path, args.compiler,
                            resume=args.resume and not args.quick)
            res["meta"]["classifier"] = clf_info
            res["meta"]["wall_seconds_this_run"] = round(time.perf_counter() - began, 1)
            with open(path, "w") as f:
                json.dump({k: v for k, v in res.items() if k != "samples"}, f, indent=1)
            all_results[m] = res
            if not args.quick and not glob.glob(os.path.join(results_dir, f"flops_{m}*.json")):
                args.rows = FLOPS_ROWS  # what apply_measured_flops needs
                measure_flops(task, m, results_dir, args)
    for m in ("dit", "flux"):  # merge every results file of the model (several --tag runs)
        for path in sorted(glob.glob(os.path.join(results_dir, f"quality_{m}*.json"))):
            with open(path) as f:
                res = json.load(f)
            sp = path.replace(".json", "_samples.pt")
            res["samples"] = torch.load(sp) if os.path.exists(sp) else {}
            if m not in all_results:
                all_results[m] = res
            if not args.quick and not glob.glob(os.path.join(results_dir, f"flops_{m}*.json")):
                args.rows = FLOPS_ROWS  # what apply_measured_flops needs
                measure_flops(task, m, results_dir, args)
                continue
            into = all_results[m]
            for rid, row in res["rows"].items():
                into["rows"].setdefault(rid, row)
            for key, x in res["samples"].items():
                into.setdefault("samples", {}).setdefault(key, x)
    for m, res in all_results.items():
        apply_measured_flops(res, os.path.join(results_dir, f"flops_{m}*.json"))
    render(all_results, args.out, clf_info, quick=args.quick)
    return 0


FLOPS_ROWS = r"^fora-N6-o0-(block|paper)$|^diffusers"


def measure_flops(task, m: str, results_dir: str, args, quick: bool = False) -> None:
    """Measured generation FLOPs of the rows matching --rows into flops_<model><tag>.json."""
    from quality_lib.flops import measure_generation
    from quality_lib.rows import Runner, standard_rows

    rows = standard_rows(m, quick=quick, steps=12 if quick else 50)
    if args.rows:
        rows = [r for r in rows if r.id == "full" or re.search(args.rows, r.id)]
    path = os.path.join(results_dir, f"flops_{m}{args.tag}.json")
    measured = {}
    if os.path.exists(path):
        with open(path) as f:
            measured = json.load(f)
    runner = Runner(task, args.compiler)
    for row in rows:
        if row.id in measured:
            continue
        try:
            measured[row.id] = measure_generation(task, runner, row)
        except Exception as err:  # noqa: BLE001 (recorded, the other rows go on)
            measured[row.id] = {"error": str(err)[:300]}
        print(f"[flops {m}] {row.id}: {measured[row.id]}", flush=True)
        with open(path, "w") as f:
            json.dump(measured, f, indent=1)


def apply_measured_flops(res: dict, pattern: str) -> None:
    """Replace the region-based FLOPs estimate by counts measured on the compiled graphs.

    `--flops-only` measures, per cut, one compute step and one forecast step of the compiled
    graphs (FlopCounterMode around the callables the backend gives Dynamo) and diffusers' hooked
    generations directly. FlopCounterMode counts matmuls/convolutions only, so the Taylor
    polynomial (elementwise) is added analytically: 2 (order + 1) FLOPs per element of the live
    outputs on a forecast step, 2 order + 1 per element for the table update on a computed step.
    """
    from ts_compile.calling import live_elements

    measured: dict = {}
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for rid, v in json.load(f).items():
                measured.setdefault(rid, v)
    full = measured.get("full", {}).get("generation_flops")
    if not full:
        return
    steps = res["rows"]["full"]["row"]["steps"] if "full" in res["rows"] else 50
    full_step = full / steps
    n = res["meta"]["samples_per_seed"]
    per_cut = {cut: measured.get(f"fora-N6-o0-{cut}", {}) for cut in ("block", "paper")}
    for rid, r in res["rows"].items():
        if "error" in r:
            continue
        row = r["row"]
        gen = None
        if row["method"] == "full":
            gen = full
        elif row["method"] == "steps":
            gen = row["steps"] * full_step
        elif row["method"] == "diffusers":
            gen = measured.get(rid, {}).get("generation_flops")
        else:
            m = per_cut.get(row["cut"], {})
            if m.get("forecast_step_flops") is not None:
                numel = live_elements(r["state_bytes"], row["order"]) / n  # live outputs, batch 2
                c = r["computed"]
                gen = (c * (m["compute_step_flops"] + (2 * row["order"] + 1) * numel)
                       + (row["steps"] - c) * (m["forecast_step_flops"]
                                               + 2 * (row["order"] + 1) * numel))
        if gen:
            r["flops_speedup_estimate"] = r["flops_speedup"]
            r["flops_speedup"] = full / gen
            r["flops_measured"] = True


def _train_section(model: str) -> str:
    from quality_lib import models

    path = os.path.join(models.CHECKPOINTS, f"{model}_digits", "train_log.json")
    if not os.path.exists(path):
        return "(no training record)\n"
    with open(path) as f:
        rec = json.load(f)
    phases = []  # oldest first: a run started from a checkpoint keeps that run's log
    while rec is not None:
        phases.insert(0, rec)
        rec = rec.get("previous")
    out = []
    for k, rec in enumerate(phases):
        curve = rec["loss_curve"]
        every = 100 if rec["steps"] <= 2000 else 1000
        keep = [c for c in curve if c[0] % every == 0 or c[0] == curve[0][0] or c is curve[-1]]
        cells = " | ".join(f"{s}: {l:.4f}" for s, l in keep)
        flags = (" --init <phase 1's checkpoint>" if rec.get("init") else "") + (
            " --lr-decay" if rec.get("lr_decay") else "")
        out.append(f"Training{f' phase {k + 1}' if len(phases) > 1 else ''}: `python benchmarks/"
                   f"train_{model}.py --steps {rec['steps']}{flags}` (seed {rec['seed']}, batch "
                   f"{rec['batch']}, {rec['threads']} thread(s), "
                   f"{rec['parameters'] / 1e6:.2f} M parameters): "
                   f"{rec['train_seconds'] / 60:.1f} min wall, load average at the end "
                   f"{rec['load_at_end']}. Loss (mean over 50-step windows, by step): {cells}\n")
    return "\n".join(out)


def render(all_results: dict, out: str, clf_info: dict, quick: bool = False) -> None:
    from quality_lib import report

    parts = [BEGIN, ""]
    parts.append(f"Feature classifier (MLP 64-128-32-10 on the train split, `benchmarks/checkpoints/"
                 f"classifier_digits.safetensors`): held-out accuracy "
                 f"{clf_info['heldout_acc'] * 100:.1f}% on {clf_info['test_images']} test digits. "
                 f"Fréchet distance of real digits against the test split: "
                 f"{clf_info['fd_train_vs_test']:.2f} (whole train split), "
                 + ", ".join(f"{v:.2f} ({k.split('_')[1][5:]} train digits)" for k, v in
                             clf_info.items() if k.startswith("fd_train") and
                             k != "fd_train_vs_test")
                 + " — the floor at that sample size.\n")
    titles = {"dit": "DiT (DDIM-50, CFG 1.5)", "flux": "FLUX-like (shifted flow-matching Euler-50, "
              "CFG 1.5)"}
    for m, res in all_results.items():
        meta = res["meta"]
        parts.append(f"### {titles[m]}\n")
        if not quick:
            parts.append(_train_section(m))
        parts.append(
            f"Sampling: seeds {meta['seeds']}, {meta['samples_per_seed']} samples per seed "
            f"(labels 0..9 repeating), inner compiler `{meta['compiler']}`, "
            f"{meta['threads']} torch thread(s), CPU; one full step = "
            f"{meta['step_flops_per_sample'] / 1e6:.1f} MFLOPs per sample (x2 with CFG). "
            f"Load average while rows ran: {_load_range(res)}. Metrics: mean ± sd over seeds; "
            "PSNR/SSIM/rel L2 against the full-compute samples of the same noise; s / gen = "
            "wall seconds for one seed's samples (first seed includes compiling; indicative only).\n")
        parts.append("Main rows:\n")
        parts.append(report.table(res, ("full", "fora", "taylorseer", "official", "steps",
                                          "diffusers")))
        parts.append("")
        if any(r["row"]["method"] == "time" for r in res["rows"].values()):
            parts.append("Time variable (`time=`), cut=\"block\", warm-up 3 (the step-index rows "
                         "repeated for comparison):\n")
            keep = {k: v for k, v in res["rows"].items()
                    if v["row"]["method"] == "time" or k == "full" or
                    (v["row"]["method"] == "taylorseer" and v["row"]["cut"] == "block"
                     and v["row"]["interval"] in (5, 6) and v["row"]["order"] in (1, 2, 3))}
            parts.append(report.table({"rows": keep}))
            parts.append("")
        errs = {k: v["error"] for k, v in res["rows"].items() if "error" in v}
        if errs:
            parts.append("Rows that could not run: " + "; ".join(
                f"`{k}`: {v.splitlines()[0][:160]}" for k, v in errs.items()) + "\n")
        if any(r["row"]["method"] == "warmup" for r in res["rows"].values()):
            parts.append("Warm-up (cut=\"block\"; the warm-up 3 rows repeated for comparison):\n")
            keep = {k: v for k, v in res["rows"].items()
                    if v["row"]["method"] == "warmup" or k in (
                        "full", "fora-N5-o0-block", "ts-N5-o1-block", "ts-N5-o2-block",
                        "ts-N5-o3-block", "ts-N6-o1-block", "ts-N6-o2-block")}
            parts.append(report.table({"rows": keep}))
            parts.append("")
        fig = f"quality_{m}_fd_vs_speedup.png"
        report.figure(res, os.path.join(out, "img", fig),
                      f"{titles[m]}: Frechet distance vs FLOPs speedup")
        parts.append(f"![Fréchet distance vs FLOPs speedup, {m}](img/{fig})\n")
        samples = res.get("samples", {})
        seed0 = meta["seeds"][0]
        picks = [("full compute", "full"), ("FORA N=6", "fora-N6-o0-block"),
                 ("TaylorSeer o2 N=6", "ts-N6-o2-block"), ("TaylorSeer o3 N=6 paper",
                                                           "ts-N6-o3-paper"),
                 ("TaylorSeer o2 N=5 warm-up 1", "ts-N5-o2-block-w1"), ("10 steps", "steps-10")]
        if quick:
            picks = [("full compute", "full"), ("TaylorSeer o2 N=5", "ts-N5-o2-block"),
                     ("FORA N=5", "fora-N5-o0-block")]
        panels = [(label, samples[f"{rid}/seed{seed0}"]) for label, rid in picks
                  if f"{rid}/seed{seed0}" in samples]
        if panels:
            grid = f"quality_{m}_samples.png"
            report.grid_image(panels, os.path.join(out, "img", grid))
            parts.append(f"![samples, {m}: columns are the requested digits 0..9, same noise in "
                         f"every panel](img/{grid})\n")
    parts.append(END)
    text = "\n".join(parts) + "\n"
    path = os.path.join(out, "quality.md")
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if BEGIN in old and END in old:
            text = old[:old.index(BEGIN)] + text.rstrip("\n") + old[old.index(END) + len(END):]
            if not text.endswith("\n"):
                text += "\n"
        else:
            text = old.rstrip("\n") + "\n\n" + text
    else:
        text = "# Quality benchmark\n\n" + text
    with open(path, "w") as f:
        f.write(text)


STUDY_BEGIN = "<!-- BEGIN GENERATED STUDY (benchmarks/quality.py --study forecasters) -->"
STUDY_END = "<!-- END GENERATED STUDY -->"


def run_study(args, names, seeds, n, classifier, real, clf_info, results_dir) -> int:
    """`--study forecasters`: run (unless --render-only) and render the study's section."""

    from quality_lib import report
    from quality_lib.bench import run_model
    from quality_lib.rows import study_rows
    from quality_lib.sampling import load_task

    titles = {"dit": "DiT (DDIM-50, CFG 1.5)", "flux": "FLUX-like (shifted flow-matching "
              "Euler-50, CFG 1.5)"}
    all_results = {}
    for m in names:
        path = os.path.join(results_dir, f"study_forecasters_{m}{args.tag}.json")
        if not args.render_only:
            rows = study_rows(m)
            if args.rows:
                rows = [r for r in rows if r.id == "full" or re.search(args.rows, r.id)]
            began = time.perf_counter()
            res = run_model(load_task(m), rows, seeds, n, classifier, real, path, args.compiler,
                            resume=args.resume)
            res["meta"]["classifier"] = clf_info
            res["meta"]["wall_seconds_this_run"] = round(time.perf_counter() - began, 1)
            with open(path, "w") as f:
                json.dump({k: v for k, v in res.items() if k != "samples"}, f, indent=1)
    for m in ("dit", "flux"):
        for path in sorted(glob.glob(os.path.join(results_dir, f"study_forecasters_{m}*.json"))):
            with open(path) as f:
                res = json.load(f)
            into = all_results.setdefault(m, res)
            for rid, row in res["rows"].items():
                into["rows"].setdefault(rid, row)
    parts = [STUDY_BEGIN, ""]
    for m, res in all_results.items():
        apply_measured_flops(res, os.path.join(results_dir, f"flops_{m}*.json"))
        meta = res["meta"]
        parts.append(f"### Forecasters and adaptive steps: {titles[m]}\n")
        parts.append(f"Seeds {meta['seeds']}, {meta['samples_per_seed']} samples per seed, inner "
                     f"compiler `{meta['compiler']}`, {meta['threads']} torch thread(s); load "
                     f"average while rows ran: {_load_range(res)}. Sorted by FLOPs speedup.\n")
        parts.append(report.study_table(res))
        parts.append("")
        errs = {k: v["error"] for k, v in res["rows"].items() if "error" in v}
        if errs:
            parts.append("Rows that could not run: " + "; ".join(
                f"`{k}`: {v.splitlines()[0][:160]}" for k, v in errs.items()) + "\n")
        fig = f"quality_{m}_pareto.png"
        report.pareto_figure(res, os.path.join(args.out, "img", fig),
                             f"{titles[m]}: quality vs FLOPs speedup")
        parts.append(f"![quality vs FLOPs speedup, {m}](img/{fig})\n")
    parts.append(STUDY_END)
    text = "\n".join(parts)
    doc = os.path.join(args.out, "quality.md")
    old = open(doc).read() if os.path.exists(doc) else "# Quality benchmark\n"
    if STUDY_BEGIN in old and STUDY_END in old:
        new = old[:old.index(STUDY_BEGIN)] + text + old[old.index(STUDY_END) + len(STUDY_END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(doc, "w") as f:
        f.write(new)
    return 0


def _load_range(res: dict) -> str:
    loads = [float(r["load"].split()[0]) for r in res["rows"].values() if "load" in r]
    return f"{min(loads):.1f}-{max(loads):.1f} (1-min)" if loads else "?"


if __name__ == "__main__":
    sys.exit(main())
