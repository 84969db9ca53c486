"""Deployment stacks against the Dynamo path: sizes, times, per-call latency of each program.

    python benchmarks/export_bench.py [--models flux,dit] [--device cpu] [--repeat 20]
                                      [--threads N] [--cold] [--stacks aoti,onnx,openvino]
    python benchmarks/export_bench.py --device cuda      # the GPU variant (`gpu_check`)

For each tiny model (random weights, no download; FLUX: the issue's 2 double + 2 single block
config with 64 image tokens, DiT: tests/diffusers_models.tiny_dit):

1. export, per artefact format (aoti, onnx): `export` (ts_compile/deploy.py) with options
   order=2, interval=3, warmup=2. Times come from the manifest's `build` record (trace + passes,
   then each program's compile) and the wall clock; sizes are the files of the artefact.
2. cold start, in a new interpreter (what a server pays): imports (torch, ts_compile.deploy,
   AOTInductor's loader), `load` (manifest and record checks, SHA-256 of both packages, both
   opened and probed), the first call (a computed step).
3. latency, median over `--repeat` generations of `--steps` steps, per kind of step (a step counts
   as computed or forecast from the runner's / compiled model's `stats()` delta), one row per
   stack: the eager model (no TaylorSeer); the Dynamo path `torch.compile(backend="taylorseer")`
   with Inductor, and with OpenVINO as the inner compiler (f32); each loaded runner
   (`ExportedTaylorSeer`: input checks + host dispatch + the program); each runner's programs
   called directly (no dispatch).
4. agreement: max |stack - Dynamo path with Inductor| over one generation.

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
from ts_compile.artefact import read_manifest as load_manifest  # noqa: E402
from ts_compile.cli.toy_models import FLUX_CONFIGS  # noqa: E402
from ts_compile.deploy import FORMATS, export, load, package_sizes  # noqa: E402
from ts_compile.integrations.diffusers_inputs import flux_image_ids  # noqa: E402

OPTIONS = {"order": 2, "interval": 3, "warmup": 2}
FLUX_CONFIG = dict(FLUX_CONFIGS["test"], num_single_layers=2)


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


STACKS = ("aoti", "onnx", "openvino")  # besides the Dynamo path with Inductor, always measured
_NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("openvino",)}


def available_stacks(requested: list[str], device: torch.device) -> tuple[list[str], list[str]]:
    """The stacks that can run here, and a note for each one that cannot."""
    import importlib.util

    kept, notes = [], []
    for stack in requested:
        missing = [m for m in _NEEDS.get(stack, ()) if importlib.util.find_spec(m) is None]
        if missing:
            notes.append(f"{stack}: skipped, not installed ({', '.join(missing)}; pip install "
                         f"-e '.[{stack}]')")
        elif stack in ("onnx", "openvino") and device.type != "cpu":
            notes.append(f"{stack}: skipped, measured on the CPU only here")
        else:
            kept.append(stack)
    return kept, notes


def openvino_compiler(threads: int):
    """OpenVINO's Dynamo backend with float32 inference (without the hint it computes in bf16
    on CPUs with avx512_bf16) and torch's thread count."""
    import functools

    from torch._dynamo.backends.registry import lookup_backend

    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
    return functools.partial(lookup_backend("openvino"), options={"config": config})


def _artefact_row(name: str, device: torch.device, fmt: str, path: Path, export_s: float,
                  cold: dict) -> dict:
    build = load_manifest(path)["build"]
    sizes = package_sizes(path)
    suffix = FORMATS[fmt]
    return {
        "model": name, "device": device.type, "format": fmt,
        "trace+passes s": build["trace_s"],
        "compute compile s": build["compute_compile_s"],
        "forecast compile s": build["forecast_compile_s"],
        "export total s": round(export_s, 1),
        "compute MB": round(sizes[f"compute{suffix}"] / 1e6, 2),
        "forecast MB": round(sizes[f"forecast{suffix}"] / 1e6, 2),
        "manifest kB": round(sizes["manifest.json"] / 1e3, 1),
        "compute ops": "{} -> {}".format(*build["compute_ops"]),
        "forecast ops": "{} -> {}".format(*build["forecast_ops"]),
        "new proc: import s": cold["import_s"],
        "new proc: load s": cold["load_s"],
        "new proc: 1st call s": cold["first_call_s"],
    }


def _program_calls(runner, make_kwargs, steps: int) -> dict:
    """Each program of a loaded runner alone: flat tensors + the runner's own state tensors, no
    dispatch (for ONNX this includes copying the returned state back)."""
    runtime = runner._runtime
    runner(**make_kwargs(0, steps))  # allocates the state
    runner.reset()
    state = next(iter(runtime.states.values()))
    flat = [v for v in torch.utils._pytree.tree_leaves(
        torch.export._tree_utils.reorder_kwargs(make_kwargs(3, steps), runner._in_spec))
        if isinstance(v, torch.Tensor)]
    return {k: (lambda f=fn: f(*flat, *state.tables, state.scalars))
            for k, fn in (("computed", runtime.compute_fn), ("forecast", runtime.forecast_fn))}


def _max_diff(a, b, make_kwargs, steps: int) -> float:
    """Largest output difference over one generation, both from a fresh state."""
    ts_compile.reset(a)
    ts_compile.reset(b)
    return max((a(**make_kwargs(s, steps))[0] - b(**make_kwargs(s, steps))[0]).abs().max().item()
               for s in range(steps))


def bench_model(name: str, device: str | torch.device = "cpu", steps: int = 10,
                repeat: int = 10, workdir: str | None = None,
                stacks: list[str] = ("aoti",)) -> tuple[list[dict], list[dict]]:
    """Export, load, compile and time one model on each stack; returns (artefact rows, latency
    rows). The Dynamo path with Inductor is always measured: it is what the others are compared
    with."""
    device = torch.device(device)
    model, make_kwargs = BUILDERS[name](device)
    root = Path(workdir or tempfile.mkdtemp(prefix="ts_export_bench_"))
    artefacts = []
    # label -> (the model-like callable, its stats(), how it was built: seconds)
    variants: dict[str, tuple] = {}
    with torch.no_grad():
        variants["eager (no TaylorSeer)"] = (model, None, None)
        for stack in ("inductor", "openvino"):
            if stack == "openvino" and "openvino" not in stacks:
                continue
            compiler = "inductor" if stack == "inductor" else openvino_compiler(
                torch.get_num_threads())
            compiled = torch.compile(model, backend="taylorseer",
                                     options={**OPTIONS, "compiler": compiler})
            t0 = time.perf_counter()
            compiled(**make_kwargs(0, steps))
            _sync(device)
            variants[f"Dynamo + {stack}"] = (compiled, compiled, time.perf_counter() - t0)
        for fmt in ("aoti", "onnx"):
            if fmt not in stacks:
                continue
            path = root / f"{name}-{device.type}.{fmt}"
            t0 = time.perf_counter()
            export(model, (), make_kwargs(0, steps), options=OPTIONS, path=path, format=fmt)
            export_s = time.perf_counter() - t0
            runner = load(path, options=OPTIONS, device=device)
            artefacts.append(_artefact_row(name, device, fmt, path, export_s,
                                           _load_in_new_process(path)))
            label = {"aoti": "AOTInductor", "onnx": "ONNX Runtime"}[fmt]
            variants[f"{label} runner"] = (runner, runner, export_s)
            variants[f"{label} programs alone"] = (_program_calls(runner, make_kwargs, steps),
                                                   None, None)
        reference = variants["Dynamo + inductor"][0]
        diffs = {label: _max_diff(fn, reference, make_kwargs, steps)
                 for label, (fn, stats, _) in variants.items()
                 if stats is not None and fn is not reference}
        load_before = os.getloadavg()[0]
        # Interleaved rounds (the machine is shared: a busy spell then hits every variant alike);
        # round 0 warms up.
        times = {label: {"computed": [], "forecast": []} for label in variants}
        for round_ in range(repeat + 1):
            for label, (fn, stats, _) in variants.items():
                kept = times[label] if round_ > 0 else None
                if isinstance(fn, dict):  # programs alone: one call of each
                    for kind, call in fn.items():
                        _timed_once(call, device, kept[kind] if kept else None)
                elif stats is None:  # eager: every step runs the blocks
                    _generation(fn, None, make_kwargs, steps, device, lambda: None, kept)
                else:
                    _generation(fn, lambda s=stats: ts_compile.stats(s), make_kwargs, steps,
                                device, lambda s=stats: ts_compile.reset(s), kept)
    load_after = os.getloadavg()[0]
    latencies = [{
        "model": name, "device": device.type, "stack": label,
        "compute ms": _ms(times[label]["computed"]),
        "forecast ms": _ms(times[label]["forecast"]) if label != "eager (no TaylorSeer)" else "",
        "build s": "" if built is None else round(built, 1),
        "max |diff| vs Dynamo + inductor": "" if label not in diffs else f"{diffs[label]:.1e}",
        "loadavg before/after": f"{load_before:.1f}/{load_after:.1f}",
    } for label, (_, _, built) in variants.items()]
    return artefacts, latencies


def run(models: list[str], device: str, steps: int, repeat: int,
        stacks: list[str] = ("aoti",)) -> None:
    stacks, notes = available_stacks(list(stacks), torch.device(device))
    artefacts, latencies = [], []
    with tempfile.TemporaryDirectory(prefix="ts_export_bench_") as workdir:
        for name in models:
            artefact, latency = bench_model(name, device, steps, repeat, workdir, stacks)
            artefacts += artefact
            latencies += latency
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs, "
          f"options {OPTIONS}, {steps} steps per generation, medians over {repeat} generations"
          f"{''.join(f'; {n}' for n in notes)}")
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
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help="besides the Dynamo path with Inductor: aoti (AOTInductor "
                             "artefact), onnx (ONNX Runtime artefact), openvino (Dynamo path "
                             "with OpenVINO as the inner compiler); missing extras are skipped")
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
        run(models, "cpu", args.steps, args.repeat, [s for s in args.stacks.split(",") if s])


if __name__ == "__main__":
    main()
