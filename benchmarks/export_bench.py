"""The deployment artefact (ts_compile.export) against the Dynamo path: sizes, times, latency.

    python benchmarks/export_bench.py [--models flux,dit] [--device cpu] [--repeat 20]
                                      [--threads N] [--cold]
    python benchmarks/export_bench.py --device cuda      # the GPU variant (`gpu_check`)

For each tiny model (random weights, no download; FLUX: the issue's 2 double + 2 single block
config with 64 image tokens, DiT: tests/diffusers_models.tiny_dit):

1. export: `export` (ts_compile/deploy.py) with options order=2, interval=3, warmup=2. Times
   come from the manifest's `build` record (trace + passes, then each AOTInductor compile) and
   the wall clock; sizes are the files of the artefact.
2. cold start, in a new interpreter (what a server pays): imports (torch, ts_compile.deploy,
   AOTInductor's loader), `load` (manifest checks, SHA-256 of both packages, both opened by
   AOTInductor), the first call (a computed step).
3. latency, median over `--repeat` generations of `--steps` steps, per kind of step (a step counts
   as computed or forecast from the runner's / compiled model's `stats()` delta):
   eager model (no TaylorSeer); the Dynamo path `torch.compile(backend="taylorseer")` with the
   Inductor compiler; the loaded runner (`ExportedTaylorSeer`: input checks + host dispatch + the
   package); each package called directly (`loader.run`, no dispatch).
4. agreement: max |runner - Dynamo path| over one generation.

Every number in docs/deployment.md comes from this script's output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ts_compile  # noqa: E402
from ts_compile.deploy import export, load, package_sizes  # noqa: E402
from ts_compile.integrations.diffusers_inputs import flux_image_ids  # noqa: E402

OPTIONS = {"order": 2, "interval": 3, "warmup": 2}
FLUX_CONFIG = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                   pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))


def build_flux(device: torch.device):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**FLUX_CONFIG).eval().to(device)
    g = torch.Generator().manual_seed(1)
    fixed = dict(hidden_states=torch.randn(1, 64, 16, generator=g),
                 encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                 pooled_projections=torch.randn(1, 32, generator=g),
                 img_ids=flux_image_ids(8, 8), txt_ids=torch.zeros(8, 3))
    fixed = {k: v.to(device) for k, v in fixed.items()}

    def make_kwargs(step: int, num_steps: int) -> dict:
        sigma = torch.tensor([1.0 - step / num_steps], device=device)
        return dict(fixed, timestep=sigma, guidance=None, joint_attention_kwargs={},
                    return_dict=False)

    return model, make_kwargs


def build_dit(device: torch.device):
    from tests.diffusers_models import tiny_dit

    model, make = tiny_dit()
    model = model.to(device)

    def make_kwargs(step: int, num_steps: int) -> dict:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v
                for k, v in make(step, num_steps).items()}

    return model, make_kwargs


BUILDERS = {"flux": build_flux, "dit": build_dit}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 3) if samples else float("nan")


def _generation(call, stats, make_kwargs, steps: int, device, reset, times: dict | None) -> None:
    """One generation; each call's seconds go to times["computed"] or times["forecast"]."""
    reset()
    for step in range(steps):
        kwargs = make_kwargs(step, steps)
        before = stats()["computed_steps"] if stats else None
        _sync(device)
        t0 = time.perf_counter()
        call(**kwargs)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if times is not None:
            computed = stats is None or stats()["computed_steps"] > before
            times["computed" if computed else "forecast"].append(elapsed)


def _timed_once(fn, device, samples: list[float] | None) -> None:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    if samples is not None:
        samples.append(time.perf_counter() - t0)


_COLD_START = """
import json, sys, time
t0 = time.perf_counter()
import torch
from ts_compile.deploy import load
from torch._inductor import aoti_load_package
import torch._inductor.package
t1 = time.perf_counter()
runner = load(sys.argv[1])
t2 = time.perf_counter()
args, kwargs = runner.example_inputs()
runner(*args, **kwargs)
if runner.device.type == "cuda":
    torch.cuda.synchronize()
t3 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 3),
                  "first_call_s": round(t3 - t2, 3)}))
"""


def _load_in_new_process(path: Path) -> dict:
    """Cold start of a server: import, load, first call (a computed step) in a new interpreter."""
    import json
    import subprocess

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _COLD_START, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_model(name: str, device: str | torch.device = "cpu", steps: int = 10,
                repeat: int = 10, workdir: str | None = None) -> tuple[dict, dict]:
    """Export, load and time one model on `device`; returns (artefact row, latency row)."""
    device = torch.device(device)
    model, make_kwargs = BUILDERS[name](device)
    root = Path(workdir or tempfile.mkdtemp(prefix="ts_export_bench_"))
    path = root / f"{name}-{device.type}.tsaot"

    t0 = time.perf_counter()
    export(model, (), make_kwargs(0, steps), options=OPTIONS, path=path)
    export_s = time.perf_counter() - t0
    runner = load(path, options=OPTIONS, device=device)
    cold = _load_in_new_process(path)
    load_before = os.getloadavg()[0]
    manifest = runner.manifest
    build = manifest["build"]
    sizes = package_sizes(path)
    artefact = {
        "model": name, "device": device.type,
        "trace+passes s": build["trace_s"],
        "compute compile s": build["compute_compile_s"],
        "forecast compile s": build["forecast_compile_s"],
        "export total s": round(export_s, 1),
        "compute.pt2 MB": round(sizes["compute.pt2"] / 1e6, 2),
        "forecast.pt2 MB": round(sizes["forecast.pt2"] / 1e6, 2),
        "manifest kB": round(sizes["manifest.json"] / 1e3, 1),
        "compute ops": "{} -> {}".format(*build["compute_ops"]),
        "forecast ops": "{} -> {}".format(*build["forecast_ops"]),
        "new proc: import s": cold["import_s"],
        "new proc: load s": cold["load_s"],
        "new proc: 1st call s": cold["first_call_s"],
    }

    with torch.no_grad():
        compiled = torch.compile(model, backend="taylorseer",
                                 options={**OPTIONS, "compiler": "inductor"})
        t0 = time.perf_counter()
        compiled(**make_kwargs(0, steps))
        _sync(device)
        dynamo_compile_s = time.perf_counter() - t0

        # agreement over one generation, both from a fresh state
        ts_compile.reset(compiled)
        runner.reset()
        diff = max((runner(**make_kwargs(s, steps))[0]
                    - compiled(**make_kwargs(s, steps))[0]).abs().max().item()
                   for s in range(steps))

        # each package alone: flat tensors + the runner's own state tensors, no dispatch
        runtime = runner._runtime
        state = next(iter(runtime.states.values()))
        flat = [v for v in torch.utils._pytree.tree_leaves(
            torch.export._tree_utils.reorder_kwargs(make_kwargs(3, steps), runner._in_spec))
            if isinstance(v, torch.Tensor)]
        package_calls = {k: (lambda f=fn: f(*flat, *state.tables, state.scalars))
                         for k, fn in (("compute", runtime.compute_fn),
                                       ("forecast", runtime.forecast_fn))}
        # Interleaved rounds (the machine is shared: a busy spell then hits every variant alike);
        # round 0 warms up.
        times = {k: {"computed": [], "forecast": []} for k in ("eager", "dynamo", "runner")}
        package_times = {"compute": [], "forecast": []}
        for round_ in range(repeat + 1):
            keep = round_ > 0
            _generation(model, None, make_kwargs, steps, device, lambda: None,
                        times["eager"] if keep else None)
            _generation(compiled, lambda: ts_compile.stats(compiled), make_kwargs, steps, device,
                        lambda: ts_compile.reset(compiled), times["dynamo"] if keep else None)
            _generation(runner, runner.stats, make_kwargs, steps, device, runner.reset,
                        times["runner"] if keep else None)
            for kind, fn in package_calls.items():
                _timed_once(fn, device, package_times[kind] if keep else None)
    eager = _ms(times["eager"]["computed"])
    dyn = {k: _ms(v) for k, v in times["dynamo"].items()}
    run = {k: _ms(v) for k, v in times["runner"].items()}
    packages = {k: _ms(v) for k, v in package_times.items()}
    latency = {
        "model": name, "device": device.type, "eager ms": eager,
        "dynamo compile s": round(dynamo_compile_s, 1),
        "dynamo compute ms": dyn["computed"], "dynamo forecast ms": dyn["forecast"],
        "runner compute ms": run["computed"], "runner forecast ms": run["forecast"],
        "package compute ms": packages["compute"], "package forecast ms": packages["forecast"],
        "max |runner-dynamo|": f"{diff:.1e}",
        "loadavg before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
    }
    return artefact, latency


def run(models: list[str], device: str, steps: int, repeat: int) -> None:
    artefacts, latencies = [], []
    with tempfile.TemporaryDirectory(prefix="ts_export_bench_") as workdir:
        for name in models:
            artefact, latency = bench_model(name, device, steps, repeat, workdir)
            artefacts.append(artefact)
            latencies.append(latency)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs, "
          f"options {OPTIONS}, {steps} steps per generation, medians over {repeat} generations")
    print(tabulate(artefacts, headers="keys", tablefmt="github"))
    print()
    print(tabulate(latencies, headers="keys", tablefmt="github"))


def gpu_check(models: list[str] = ("flux", "dit"), steps: int = 10, repeat: int = 10) -> bool:
    """The GPU variant: the same export, load, agreement and timings on `cuda`.

    Returns False (and prints why) when CUDA is not available. Not run yet: no GPU was available
    where this was written (see docs/deployment.md).
    """
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; nothing was run.")
        return False
    run(list(models), "cuda", steps, repeat)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="flux,dit")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (and OMP_NUM_THREADS of the cold-start "
                             "process); default: torch's default")
    parser.add_argument("--cold", action="store_true",
                        help="use a fresh, empty Inductor cache (TORCHINDUCTOR_CACHE_DIR), so "
                             "compile times include every C++ compile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.cold:
        import atexit
        import shutil

        cache = tempfile.mkdtemp(prefix="ts_export_bench_cache_")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        print(f"cold Inductor cache: {cache}")
    models = [m for m in args.models.split(",") if m]
    if args.device == "cuda":
        gpu_check(models, args.steps, args.repeat)
    else:
        run(models, "cpu", args.steps, args.repeat)


if __name__ == "__main__":
    main()
