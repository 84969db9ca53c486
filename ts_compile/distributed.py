"""Helpers for models parallelised with diffusers' `enable_parallelism` (context / tensor parallel).

Nothing here is needed for FLUX; `prepare_parallel(model)` is needed before `torch.compile` when a
model's context-parallel plan splits an argument that the model passes positionally (Wan's
`blocks.0` hidden states): diffusers' split hook then looks the argument's index up with
`inspect.signature` on its first call, which Dynamo cannot trace (graph break inside the block
stack; the backend then finds no blocks and compiles plainly).
"""

from __future__ import annotations

import inspect
import logging

import torch

log = logging.getLogger(__name__)


def prepare_parallel(model: torch.nn.Module) -> int:
    """Fill the argument-index caches of diffusers' context-parallel split hooks on `model`.

    Does what each hook would do on its first eager call (same rule: the forward's parameters
    after `self`), so that the first compiled call traces without a graph break. Call it after
    `model.enable_parallelism(...)` and before `torch.compile`. Returns the number of hooks filled.
    """
    filled = 0
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in getattr(registry, "hooks", {}).values():
            metadata = getattr(hook, "module_forward_metadata", None)
            if metadata is None or metadata.cached_parameter_indices is not None:
                continue
            if getattr(metadata, "_cls", None) is None:
                continue
            names = list(inspect.signature(metadata._cls.forward).parameters)[1:]
            metadata.cached_parameter_indices = {name: i for i, name in enumerate(names)}
            filled += 1
    log.info("prepare_parallel: filled %d context-parallel hook caches", filled)
    return filled


def _collectives_of(runtime) -> dict:
    """Per graph, counted once and kept on the runtime: collectives inside each region and those
    a forecast step does not issue (compute graph minus forecast graph, by kind)."""
    cached = getattr(runtime, "collectives", None)
    if cached is None:
        from .analysis.collectives import collectives_per_region, count_collectives

        graphs = getattr(runtime, "graphs", None)
        if graphs is None:  # a loaded artefact: its graphs are not kept
            cached = {"per_region": {}, "skipped_per_forecast": {}}
        else:
            skipped = count_collectives(graphs.compute.graph)
            skipped.subtract(count_collectives(graphs.forecast.graph))
            cached = {"per_region": {name: sum(c.values()) for name, c in
                                     collectives_per_region(graphs.guarded).items()},
                      "skipped_per_forecast": {k: n for k, n in skipped.items() if n > 0}}
        runtime.collectives = cached
    return cached


def collective_stats(runtimes) -> dict:
    """The collective counters of `ts_compile.stats` (this process, i.e. this rank only).

    collectives_per_region: collectives one call of each region issues (all-to-all, all-gather,
    all-reduce... see analysis/collectives.py); collectives_skipped: those forecast steps did
    not issue, forecast steps x (compute graph's - forecast graph's), with the split by kind.
    """
    per_region: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for runtime in runtimes:
        counts = _collectives_of(runtime)
        per_region.update(counts["per_region"])
        for kind, n in counts["skipped_per_forecast"].items():
            by_kind[kind] = by_kind.get(kind, 0) + n * runtime.forecast_steps
    return {"collectives_per_region": per_region,
            "collectives_skipped": sum(by_kind.values()),
            "collectives_skipped_by_kind": by_kind}
