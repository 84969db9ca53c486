"""Multi-process benchmark: taylorseer on diffusers' context / tensor parallelism.

    python benchmarks/distributed_bench.py                          # CPU, gloo, 2 processes
    python benchmarks/distributed_bench.py --size tiny --steps 8 --repeats 1   # seconds
    python benchmarks/distributed_bench.py --backend nccl --nproc 4 --size large   # 4 GPUs
    python benchmarks/distributed_bench.py --backend nccl --dry-run  # check the arguments only

For each parallel mode (--modes: ulysses, ring, tp) every rank builds the same model (same seed),
calls `enable_parallelism`, compiles it twice (backend="taylorseer", and the same inner compiler
without TaylorSeer as the baseline), runs one untimed generation of --steps calls (compiles),
then --repeats timed generations of each. Reported per rank: median time of a full step (the
baseline), of a taylorseer compute step and of a forecast step; collectives issued per compute
step and per forecast step (counted in the graphs, see ts_compile/analysis/collectives.py)
and skipped in total (`ts_compile.stats`); the rank's Taylor state; generation time and speedup.
A single-process row (the launcher, before the ranks start) is the reference for the speedup.

gloo (default): CPU processes; applies the test-only CPU shims of tests/distributed_worker.py
(never the package). Timing at small sizes is dominated by gloo latency: see docs/distributed.md.
nccl: one GPU per rank (refused when CUDA is missing or has fewer GPUs than --nproc); no shims;
bfloat16 and the "_native_cudnn" attention backend (ring attention needs the log-sum-exp, which
the "native" backend does not return).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from ts_compile.cli.toy_models import FLUX_CONFIGS  # noqa: E402

MODES = ("ulysses", "ring", "tp")
MODELS = ("flux", "wan")
# (config, latent shape); tiny = the test suite's models.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {  # CPU: a few tens of ms per step in one process
        "flux": dict(config=dict(FLUX_CONFIGS["bench"], guidance_embeds=False), grid=32, text=32),
        "wan": dict(config=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32,
                                in_channels=16, out_channels=16, text_dim=256, freq_dim=256,
                                ffn_dim=512, num_layers=4, rope_max_seq_len=64),
                    latent=(1, 16, 4, 32, 32), text=32),
    },
    "large": {  # GPUs: FLUX.1-dev's width (24 x 128), 1024x1024 image tokens; Wan2.1-1.3B's width
        "flux": dict(config=dict(patch_size=1, in_channels=64, num_layers=4, num_single_layers=8,
                                 attention_head_dim=128, num_attention_heads=24,
                                 joint_attention_dim=4096, pooled_projection_dim=768,
                                 axes_dims_rope=(16, 56, 56), guidance_embeds=False),
                     grid=64, text=512),
        "wan": dict(config=dict(patch_size=(1, 2, 2), num_attention_heads=12,
                                attention_head_dim=128, in_channels=16, out_channels=16,
                                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=6,
                                rope_max_seq_len=1024),
                    latent=(1, 16, 21, 60, 104), text=512),
    },
}


class UsageError(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo",
                        help="gloo: CPU processes; nccl: one GPU per process")
    parser.add_argument("--nproc", type=int, default=2, help="processes (= parallel degree)")
    parser.add_argument("--model", choices=MODELS, default="flux")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma list of " + ", ".join(MODES))
    parser.add_argument("--size", choices=tuple(SIZES), default=None,
                        help="model size (default: small on gloo, large on nccl)")
    parser.add_argument("--steps", type=int, default=20, help="calls per generation")
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per variant")
    parser.add_argument("--compiler", choices=("eager", "inductor"), default=None,
                        help="inner compiler (default: eager on gloo, inductor on nccl)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-process row")
    parser.add_argument("--timeout", type=float, default=300.0, help="collective timeout, s")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the arguments and the machine, print the plan, run nothing")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in args.modes if m not in MODES]
    if not args.modes or unknown:
        raise UsageError(f"--modes: unknown {unknown or 'empty'}; choose from {', '.join(MODES)}")
    if args.model == "wan" and "tp" in args.modes:
        raise UsageError("--modes tp: diffusers 0.42 has no tensor-parallel plan for Wan "
                         "(WanTransformer3DModel._tp_plan is None); use ulysses or ring")
    if args.nproc < 2:
        raise UsageError(f"--nproc {args.nproc}: parallelism needs at least 2 processes")
    for name in ("steps", "interval", "repeats"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if not 0 <= args.order <= 4:
        raise UsageError("--order must be in 0..4")
    args.size = args.size or ("large" if args.backend == "nccl" else "small")
    args.compiler = args.compiler or ("inductor" if args.backend == "nccl" else "eager")
    if args.backend == "nccl":
        if not torch.cuda.is_available():
            raise UsageError("--backend nccl: CUDA is not available on this machine "
                             "(use --backend gloo for CPU processes)")
        if torch.cuda.device_count() < args.nproc:
            raise UsageError(f"--backend nccl --nproc {args.nproc}: only "
                             f"{torch.cuda.device_count()} GPU(s) visible")
        if not torch.distributed.is_nccl_available():
            raise UsageError("--backend nccl: this torch build has no NCCL")
    return args


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def build(args, device: torch.device, dtype: torch.dtype):
    """(model, make_kwargs(step)) on `device`; same weights on every rank (fixed seed)."""
    model, make_kwargs = _build(args, device, dtype)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model, make_kwargs


def _build(args, device: torch.device, dtype: torch.dtype):
    if args.size == "tiny":
        from tests.diffusers_models import BUILDERS

        model, make = BUILDERS[args.model]()
        model = model.to(device)

        def make_kwargs(step):
            kwargs = make(step, args.steps)
            return {k: v.to(device, dtype if v.is_floating_point() else v.dtype)
                    if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return model, make_kwargs

    spec = SIZES[args.size][args.model]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    if args.model == "flux":
        from diffusers import FluxTransformer2DModel

        from tests.diffusers_models import flux_image_ids

        config = spec["config"]
        model = FluxTransformer2DModel(**config).eval().to(device)
        grid = spec["grid"]
        x = randn(1, grid * grid, config["in_channels"])
        ctx = randn(1, spec["text"], config["joint_attention_dim"])
        pooled = randn(1, config["pooled_projection_dim"])
        img_ids, txt_ids = flux_image_ids(grid, grid).to(device), torch.zeros(spec["text"], 3,
                                                                                device=device)

        def make_kwargs(step):
            t = torch.full((1,), 1.0 - step / args.steps, device=device, dtype=dtype)
            return dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                        timestep=t, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)
        return model, make_kwargs

    from diffusers import WanTransformer3DModel

    config = spec["config"]
    model = WanTransformer3DModel(**config).eval().to(device)
    x, ctx = randn(*spec["latent"]), randn(1, spec["text"], config["text_dim"])

    def make_kwargs(step):
        t = torch.full((1,), 1000.0 * (1.0 - step / args.steps), device=device, dtype=dtype)
        return dict(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)
    return model, make_kwargs


# ---------------------------------------------------------------------------------------------
# one process: time the baseline and taylorseer
# ---------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generation(fn, make_kwargs, steps, device, runtimes=None):
    """Per-step seconds, and per step whether it was a forecast (from the runtimes' counters).
    A taylorseer model starts a new generation (`ts_compile.reset`)."""
    import ts_compile

    if runtimes is not None:
        ts_compile.reset(fn)
    times, forecast = [], []
    for step in range(steps):
        before = sum(r.forecast_steps for r in runtimes) if runtimes else 0
        _sync(device)
        began = time.perf_counter()
        fn(**make_kwargs(step))
        _sync(device)
        times.append(time.perf_counter() - began)
        forecast.append(bool(runtimes) and sum(r.forecast_steps for r in runtimes) > before)
    return times, forecast


def measure(args, mode: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import ts_compile
    from ts_compile.api import controller_of
    from ts_compile.analysis.collectives import count_collectives

    torch._dynamo.reset()
    model, make_kwargs = build(args, device, dtype)
    # Ring attention needs the log-sum-exp: on GPUs a backend that returns it (on CPU, the shim).
    attention = "_native_cudnn" if args.backend == "nccl" else "native"
    if mode == "single":
        model.set_attention_backend(attention)
    else:
        from tests.distributed_worker import enable

        enable(model, mode, args.nproc, attention)
    inner = {"eager": "eager", "inductor": "inductor"}[args.compiler]
    baseline = torch.compile(model, backend=inner)
    options = {"compiler": args.compiler, "interval": args.interval, "order": args.order,
               "warmup": 3}
    ts = torch.compile(model, backend="taylorseer", options=options)
    with torch.no_grad():
        _generation(baseline, make_kwargs, args.steps, device)  # compiles
        _generation(ts, make_kwargs, args.steps, device)
        runtimes = controller_of(ts).runtimes
        ts_compile.reset(ts)
        full, compute, forecast, gen_base, gen_ts = [], [], [], [], []
        for _ in range(args.repeats):  # alternate: a change in load hits both alike
            times, _ = _generation(baseline, make_kwargs, args.steps, device)
            full += times
            gen_base.append(sum(times))
            times, is_forecast = _generation(ts, make_kwargs, args.steps, device, runtimes)
            compute += [t for t, f in zip(times, is_forecast) if not f]
            forecast += [t for t, f in zip(times, is_forecast) if f]
            gen_ts.append(sum(times))
    stats = ts_compile.stats(ts)
    graphs = runtimes[0].graphs
    median = statistics.median
    return {
        "mode": mode,
        "rank": torch.distributed.get_rank() if mode != "single" else "-",
        "full step ms": 1e3 * median(full),
        "compute step ms": 1e3 * median(compute) if compute else float("nan"),
        "forecast step ms": 1e3 * median(forecast) if forecast else float("nan"),
        "coll./compute": sum(count_collectives(graphs.compute.graph).values()),
        "coll./forecast": sum(count_collectives(graphs.forecast.graph).values()),
        "coll. skipped (all gens)": stats["collectives_skipped"],
        "state KiB": stats["state_bytes"] / 1024,
        "gen s (baseline)": median(gen_base),
        "gen s (taylorseer)": median(gen_ts),
        "speedup": median(gen_base) / median(gen_ts),
        "computed/forecast": f"{stats['computed_steps']}/{stats['forecast_steps']}",
    }


def _rank_main(rank: int, args: argparse.Namespace, store_path: str, results_path: str) -> None:
    import torch.distributed as dist

    if args.backend == "gloo":
        from tests.distributed_worker import apply_cpu_shims

        apply_cpu_shims()
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // args.nproc))
        device, dtype = torch.device("cpu"), torch.float32
    else:
        torch.cuda.set_device(rank)
        device, dtype = torch.device("cuda", rank), torch.bfloat16
    store = dist.FileStore(store_path, args.nproc)
    dist.init_process_group(args.backend, store=store, rank=rank, world_size=args.nproc,
                            timeout=datetime.timedelta(seconds=args.timeout))
    try:
        rows = []
        for mode in args.modes:
            rows.append(measure(args, mode, device, dtype))
            dist.barrier()
        gathered = [None] * args.nproc
        dist.all_gather_object(gathered, rows)
        if rank == 0:
            torch.save([row for rank_rows in gathered for row in rank_rows], results_path)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"distributed_bench: {err}", file=sys.stderr)
        return 2
    where = (f"{args.nproc} GPUs ({torch.cuda.get_device_name(0)})" if args.backend == "nccl"
             else f"{args.nproc} CPU processes ({os.cpu_count()} cores)")
    print(f"distributed_bench: {args.model} ({args.size}), modes {', '.join(args.modes)}, "
          f"{where}, {args.backend}, inner compiler {args.compiler}, {args.steps} steps, "
          f"interval {args.interval}, order {args.order}, {args.repeats} timed generations")
    if args.dry_run:
        print("dry run: arguments and machine are fine; nothing was run")
        return 0
    from tabulate import tabulate

    rows = []
    if not args.no_single:
        device = torch.device("cuda", 0) if args.backend == "nccl" else torch.device("cpu")
        dtype = torch.bfloat16 if args.backend == "nccl" else torch.float32
        if args.backend == "gloo":  # the threads of one rank: rows compare per-process work
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // args.nproc))
        rows.append(measure(args, "single", device, dtype))
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "rows.pt")
        mp.start_processes(_rank_main, args=(args, os.path.join(tmp, "store"), results),
                           nprocs=args.nproc, start_method="spawn")
        rows += torch.load(results, weights_only=False)
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
