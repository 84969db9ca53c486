"""One rank of a multi-process taylorseer run with diffusers' context / tensor parallelism.

Run by tests/test_distributed.py (and benchmarks/distributed_bench.py reuses the set-up):

    RANK=r WORLD_SIZE=2 python -m tests.distributed_worker --store FILE --out DIR \
        --cases flux:ulysses,flux:ring,flux:tp,wan:ulysses --steps 8

For each case the rank builds the tiny model of tests/diffusers_models.py (same seed on every
rank, hence the same weights), enables the parallelism, compiles it with backend="taylorseer" and
runs one generation; it saves its outputs at every step, `ts_compile.stats`, its table shapes and
an independent eager count of the collectives issued inside the transformer blocks to
DIR/<model>_<mode>_rank<r>.pt, or the traceback to DIR/<model>_<mode>_rank<r>.err. The process
group is destroyed in `finally`, whatever happens.

`apply_cpu_shims()` holds the three CPU-only work-arounds of shared/reference/distributed.md. They
are test-only: the package never applies them, and with NCCL on GPUs none is needed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

MODES = ("ulysses", "ring", "tp")
COLLECTIVE_OPS = tuple(f"_c10d_functional.{op}" for op in (
    "all_to_all", "all_gather", "reduce_scatter", "all_reduce", "broadcast"))
OPTIONS = {"compiler": "eager", "interval": 3, "warmup": 3, "order": 2}


def apply_cpu_shims() -> None:
    """Let diffusers' parallelism run on a CPU-only torch build with gloo (tests only)."""
    # enable_parallelism computes `rank % torch.accelerator.device_count()`: 0 on a CPU build.
    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1
    # Tensor parallelism refuses the "cpu" mesh type.
    import diffusers.hooks.tensor_parallel as tensor_parallel

    if "cpu" not in tensor_parallel._SUPPORTED_TP_DEVICES:
        tensor_parallel._SUPPORTED_TP_DEVICES = (*tensor_parallel._SUPPORTED_TP_DEVICES, "cpu")
    # Ring attention needs the log-sum-exp, which the native backend refuses to return.
    from diffusers.models import attention_dispatch

    native = attention_dispatch._native_attention_forward_op
    if getattr(native, "_ts_cpu_shim", False):
        return

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                   scale=None, enable_gqa=False, return_lse=False, _save_ctx=True,
                   _parallel_config=None):
        if not return_lse:
            return native(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale,
                          enable_gqa, False, _save_ctx, _parallel_config)
        q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[:2]
        return out.permute(0, 2, 1, 3), lse.permute(0, 2, 1)  # (B, S, H, D), (B, S, H)

    forward_op._ts_cpu_shim = True
    attention_dispatch._native_attention_forward_op = forward_op


def parallel_config(mode: str, degree: int):
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import TensorParallelConfig

    if mode == "ulysses":
        return ContextParallelConfig(ulysses_degree=degree)
    if mode == "ring":
        return ContextParallelConfig(ring_degree=degree)
    if mode == "tp":
        return TensorParallelConfig(tp_degree=degree)
    raise ValueError(f"unknown parallel mode {mode!r}; expected one of {MODES}")


def context_parallel_plan(model: torch.nn.Module) -> dict | None:
    """The model's own plan, except Wan's split of a 2-D (per-token, Wan 2.2) timestep.

    With Wan 2.1's 1-D timestep that entry splits nothing; diffusers 0.42.1 then calls
    `logger.warning_once`, a method its logger lacks (an AttributeError eagerly unless
    transformers is imported and adds it; a graph break under Dynamo).
    """
    plan = getattr(model, "_cp_plan", None)
    if plan is None or type(model).__name__ != "WanTransformer3DModel":
        return None
    return {key: value for key, value in plan.items() if key != ""}


def enable(model: torch.nn.Module, mode: str, degree: int,
           attention: str = "native") -> torch.nn.Module:
    """Attention backend, `enable_parallelism`, then `ts_compile.distributed.prepare_parallel`."""
    from ts_compile.distributed import prepare_parallel

    model.set_attention_backend(attention)
    config = parallel_config(mode, degree)
    if mode == "tp":
        model.enable_parallelism(config=config)
    else:
        model.enable_parallelism(config=config, cp_plan=context_parallel_plan(model))
    prepare_parallel(model)
    return model


def dynamo_traces_output_gather() -> bool:
    """Whether Dynamo traces diffusers' context-parallel output gather (an all-gather on a non-0
    dim). torch 2.11's does not: it skips `torch._utils._maybe_view_chunk_cat`, so `fullgraph=True`
    fails there, and without it the gather and what follows run as a separate plain graph."""
    from torch._dynamo import trace_rules

    helper = getattr(torch._utils, "_maybe_view_chunk_cat", None)
    return helper is None or not trace_rules.check(helper)


def fullgraph_for(mode: str) -> bool:
    return mode == "tp" or dynamo_traces_output_gather()


class _CountCollectives(TorchDispatchMode):
    """Counts the functional collectives issued while `inside[0]` is set (eager runs only)."""

    def __init__(self, inside: list[bool]) -> None:
        super().__init__()
        self.inside = inside
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)  # e.g. "_c10d_functional.all_to_all_single.default"
        if self.inside[0] and name.startswith(COLLECTIVE_OPS):
            self.count += 1
        return func(*args, **(kwargs or {}))


def eager_block_collectives(model: torch.nn.Module, kwargs: dict[str, Any]) -> int:
    """Collectives one uncompiled forward issues inside the repeated blocks (independent of the
    passes: forward hooks mark the blocks, a dispatch mode counts)."""
    classes = set(getattr(model, "_repeated_blocks", ()))
    inside = [False]
    handles = []
    for module in model.modules():
        if type(module).__name__ in classes:
            handles.append(module.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)))
            handles.append(module.register_forward_hook(lambda *_: inside.__setitem__(0, False)))
    counter = _CountCollectives(inside)
    try:
        with torch.no_grad(), counter:
            model(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return counter.count


def run_case(model_name: str, mode: str, steps: int, degree: int,
             compiler: str = "eager") -> dict[str, Any]:
    import ts_compile
    from ts_compile.api import controller_of

    from .diffusers_models import BUILDERS

    torch._dynamo.reset()
    model, make_kwargs = BUILDERS[model_name]()
    enable(model, mode, degree)
    eager_count = eager_block_collectives(model, make_kwargs(0, steps))
    fullgraph = fullgraph_for(mode)
    compiled = torch.compile(model, backend="taylorseer", fullgraph=fullgraph,
                             options={**OPTIONS, "compiler": compiler})
    outputs = []
    with torch.no_grad():
        for step in range(steps):
            outputs.append(compiled(**make_kwargs(step, steps))[0].clone())
    controller = controller_of(compiled)
    shapes = [tuple(t.shape) for r in controller.runtimes for st in r.states.values()
              for t in st.tables]
    return {"outputs": outputs, "stats": ts_compile.stats(compiled), "table_shapes": shapes,
            "eager_block_collectives": eager_count, "fullgraph": fullgraph}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="file for torch.distributed's FileStore")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cases", required=True, help="model:mode,... e.g. flux:ulysses,wan:ring")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="collective timeout, s")
    parser.add_argument("--compiler", choices=("eager", "inductor"), default="eager",
                        help="taylorseer's inner compiler (the tests use eager: fast)")
    args = parser.parse_args(argv)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    apply_cpu_shims()
    store = dist.FileStore(args.store, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=args.timeout))
    failed = 0
    try:
        for case in args.cases.split(","):
            model_name, mode = case.split(":")
            stem = args.out / f"{model_name}_{mode}_rank{rank}"
            began = time.perf_counter()
            try:
                result = run_case(model_name, mode, args.steps, world, args.compiler)
                torch.save(result, f"{stem}.pt")
                print(f"rank {rank}: {case} done in {time.perf_counter() - began:.1f} s",
                      flush=True)
            except Exception:
                failed += 1
                stem.with_suffix(".err").write_text(traceback.format_exc())
                traceback.print_exc()
    finally:
        dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
