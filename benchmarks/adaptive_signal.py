"""Which signal predicts a forecast's error: the truncation estimate or an early-layer check?

    python benchmarks/adaptive_signal.py [--models dit flux] [--intervals 3 4 5 6 7 8]
        [--orders 1 2] [--steps 50] [--digits 4] [--out benchmarks/adaptive_signal_results.json]

On the two models trained here (benchmarks/checkpoints, their samplers from
benchmarks/quality_lib: DDIM for the DiT, flow-matching Euler for the FLUX-like model, batched
classifier-free guidance, `--digits` digits = a batch of 2 x digits per call), in eager: for each
fixed-interval run (warm-up 1, computed iff step % N == 0, the block cut's forecast: the last
block's output from its Taylor table, the official recursion in step time, taylor forecaster)
and for every forecast step, on the run's own trajectory and with the same inputs:

- true error: ||model output with the forecast - model output computed|| / ||computed||;
- truncation estimate (what options.adaptive uses): ||D_k|| * |x^k / k!| / ||D_0|| of the last
  block's table, k its highest filled row, x the distance to the last computed step;
- early-layer check (SpeCa, DBCache): the first block's own forecast (its own table, the same
  recursion) against its true output, relative.

Prints the Spearman rank correlation of each signal with the true error per model and order
(pooled over the intervals' forecast steps) and per model over all, also over the forecast steps
whose table has a row beyond D_0 (k >= 1: the steps before the second computed step have only
D_0, where the estimate is the constant 1, and an adaptive run computes there anyway), and
writes every sample and the table as JSON. One seed; the defaults took 26 s for both models on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib.sampling import load_task  # noqa: E402


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [v for v in value if isinstance(v, torch.Tensor)]


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _rel(a, b) -> float:
    return _norm([x - y for x, y in zip(a, b)]) / max(_norm(b), 1e-30)


def blocks_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = list(model.transformer_blocks)
    blocks += list(getattr(model, "single_transformer_blocks", []))
    return blocks


class Table:
    """One block output's Taylor table (rows D_0..D_order, lagged differences over the latest
    gap, as TaylorSeer and ts_compile's taylor forecaster)."""

    def __init__(self, order: int) -> None:
        self.order, self.rows, self.step = order, [], None

    def update(self, value, step: int) -> None:
        new = [[t.detach().float().clone() for t in _tensors(value)]]
        for i in range(self.order):
            if i >= len(self.rows):
                break
            new.append([(a - b) / (step - self.step) for a, b in zip(new[i], self.rows[i])])
        self.rows, self.step = new, step

    def forecast(self, step: int) -> list[torch.Tensor]:
        x = step - self.step
        out = [torch.zeros_like(t) for t in self.rows[0]]
        for i, row in enumerate(self.rows):
            out = [o + r * (x ** i / math.factorial(i)) for o, r in zip(out, row)]
        return out

    def truncation(self, step: int) -> float:
        k = len(self.rows) - 1
        coef = abs((step - self.step) ** k / math.factorial(k))
        worst = 0.0
        for top, base in zip(self.rows[k], self.rows[0]):
            b = _norm([base])
            worst = max(worst, _norm([top]) * coef / b if b > 0 else math.inf)
        return worst


class Probe:
    """One step function for a task's sampler: computes on the schedule's steps, forecasts the
    last block's output on the others (and then also runs the model as it is, for the truth)."""

    def __init__(self, model, interval: int, order: int) -> None:
        self.model, self.interval = model, interval
        blocks = blocks_of(model)
        self.first, self.last = blocks[0], blocks[-1]
        self.tables = {"first": Table(order), "last": Table(order)}
        self.step, self.samples = 0, []

    def _run(self, kwargs, replace_last=None):
        seen = {}

        def keep(name):
            def hook(module, args, output):
                seen[name] = output
                if name == "last" and replace_last is not None:
                    kind = type(output)
                    values = replace_last if isinstance(output, (tuple, list)) else replace_last[0]
                    return kind(values) if isinstance(output, (tuple, list)) else values
            return hook

        handles = [self.first.register_forward_hook(keep("first")),
                   self.last.register_forward_hook(keep("last"))]
        try:
            out = self.model(**kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return out, seen

    def __call__(self, **kwargs):
        step = self.step
        self.step += 1
        if step % self.interval == 0:
            out, seen = self._run(kwargs)
            for name, table in self.tables.items():
                table.update(seen[name], step)
            return out
        true_out, seen = self._run(kwargs)
        last_forecast = self.tables["last"].forecast(step)
        forecast_out, _ = self._run(kwargs, replace_last=[
            f.to(t.dtype) for f, t in zip(last_forecast, _tensors(seen["last"]))])
        first_true = _tensors(seen["first"])
        self.samples.append({
            "step": step, "offset": step - self.tables["last"].step,
            "filled": len(self.tables["last"].rows),
            "true_error": _rel(_tensors(forecast_out), _tensors(true_out)),
            "truncation": self.tables["last"].truncation(step),
            "early_layer": _rel(self.tables["first"].forecast(step), first_true),
        })
        return forecast_out


def correlations(samples: list[dict], suffix: str) -> dict[str, float]:
    truth = [s["true_error"] for s in samples]
    return {f"spearman_{signal}{suffix}": spearman([s[signal] for s in samples], truth)
            for signal in ("truncation", "early_layer")}


def _short(value):
    return float(f"{value:.6g}") if isinstance(value, float) else value


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for m in range(i, j + 1):
                out[order[m]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["dit", "flux"], choices=["dit", "flux"])
    parser.add_argument("--intervals", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--digits", type=int, default=4, help="digits per run (batch 2x: CFG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "adaptive_signal_results.json"))
    args = parser.parse_args()
    from tabulate import tabulate

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    samples, rows = [], []
    for name in args.models:
        task = load_task(name)
        noise, labels = task.inputs(args.seed, args.digits)
        for order in args.orders:
            for interval in args.intervals:
                probe = Probe(task.model, interval, order)
                with torch.no_grad():
                    task.sample(probe, noise, labels, args.steps)
                samples += [{"model": name, "order": order, "interval": interval, **s}
                            for s in probe.samples]
        for order in [*args.orders, "all"]:
            chosen = [s for s in samples if s["model"] == name
                      and (order == "all" or s["order"] == order)]
            full = [s for s in chosen if s["filled"] > 1]  # a row beyond D_0 (k >= 1)
            rows.append({"model": name, "order": order, "forecast_steps": len(chosen),
                         **correlations(chosen, ""), "forecast_steps_k1": len(full),
                         **correlations(full, "_k1")})
    headers = ["model", "order", "forecast steps", "Spearman: truncation estimate",
               "Spearman: early-layer check", "steps with k >= 1", "truncation (k >= 1)",
               "early-layer (k >= 1)"]
    print(f"{args.steps} steps, intervals {args.intervals}, {args.digits} digits (batch "
          f"{2 * args.digits}), seed {args.seed}; rank correlation with the forecast's true "
          "relative error, over every forecast step")
    print(tabulate([[r["model"], r["order"], r["forecast_steps"],
                     f"{r['spearman_truncation']:.3f}", f"{r['spearman_early_layer']:.3f}",
                     r["forecast_steps_k1"], f"{r['spearman_truncation_k1']:.3f}",
                     f"{r['spearman_early_layer_k1']:.3f}"]
                    for r in rows], headers=headers, tablefmt="github"))
    seconds = time.perf_counter() - began
    print(f"({seconds:.0f} s)")
    columns = list(samples[0]) if samples else []
    record = {"command": " ".join(["python benchmarks/adaptive_signal.py", *sys.argv[1:]]),
              "settings": vars(args), "seconds": round(seconds, 1), "table": rows,
              "sample_columns": columns}
    with open(args.out, "w") as f:  # one line per forecast step
        text = json.dumps(record, indent=1)
        lines = ",\n  ".join(json.dumps([_short(s[c]) for c in columns]) for s in samples)
        f.write(text[:-2] + ',\n "samples": [\n  ' + lines + "\n ]\n}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
