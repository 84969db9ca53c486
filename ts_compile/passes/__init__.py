"""The FX passes, one per file, each `(gm, settings) -> gm`, run in this order:

    find_regions        which subgraphs to forecast (module stack; no per-model adapter)
    mark_live_outputs   which region outputs carry Taylor state
    insert_guards       each region -> torch.cond(compute, region + state update, forecast)
    specialize_guards   the guarded graph -> a compute graph and a forecast graph

`build_graphs` runs them on a copy of the graph Dynamo hands the backend.
"""

from __future__ import annotations

import dataclasses

import torch.fx as fx

from ..options import TaylorSeerOptions
from .find_regions import find_regions
from .insert_guards import GUARDS_KEY, GuardInfo, TableSpec, insert_guards
from .mark_live_outputs import mark_live_outputs
from .regions import (BLOCK_LISTS_KEY, REGIONS_KEY, SKIPPED_KEY, WHOLE_GRAPH_REGION_KEY,
                      Region, block_of, declared_block_lists, normalize_module_path)
from .side_effects import mark_effects
from .specialize_guards import copy_graph_module, specialize_guards

__all__ = [
    "GuardInfo", "NotApplicable", "Region", "TableSpec", "TaylorSeerGraphs", "build_graphs",
    "block_of", "copy_graph_module", "declared_block_lists", "find_regions", "insert_guards", "mark_live_outputs",
    "normalize_module_path", "specialize_guards",
]


class NotApplicable(Exception):
    """The rewrite cannot apply to this graph; the message says why."""


@dataclasses.dataclass
class TaylorSeerGraphs:
    guarded: fx.GraphModule
    compute: fx.GraphModule
    forecast: fx.GraphModule
    regions: list[Region]
    skipped: list[tuple[str, str]]  # (region name, reason it is computed on every step)

    @property
    def guards(self) -> GuardInfo:
        return self.guarded.meta[GUARDS_KEY]


def build_graphs(gm: fx.GraphModule, settings: TaylorSeerOptions,
                 block_lists: frozenset[str] = frozenset(),
                 whole_graph_region: tuple[str, str] | None = None) -> TaylorSeerGraphs:
    """Run the passes on a copy of `gm` (Dynamo's own graph must stay untouched).

    `block_lists`: the paths of the model's block lists as its module tree declares them
    (`regions.declared_block_lists(model)`), when the model is known. `whole_graph_region`:
    (name, class) when the graph is a frame of one block's own forward (`regions.block_of`):
    then the whole graph is the region.
    """
    work = copy_graph_module(gm)
    work.meta[BLOCK_LISTS_KEY] = block_lists
    work.meta[WHOLE_GRAPH_REGION_KEY] = whole_graph_region
    mark_effects(work.graph)  # before any surgery: what Dynamo kept for an effect
    work = find_regions(work, settings)
    regions, skipped = work.meta[REGIONS_KEY], work.meta[SKIPPED_KEY]
    if not regions:
        what = ("no transformer blocks (repeated children of a module list)"
                if settings.cut == "block" else f"no module path matching cut={list(settings.cut)}")
        detail = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        raise NotApplicable(f"found {what}" + (f" (skipped {detail})" if detail else ""))
    work = mark_live_outputs(work, settings)
    if not any(any(r.live) for r in regions):
        raise NotApplicable("no region output reaches the graph's output")
    try:
        guarded = insert_guards(work, settings)
    except NotImplementedError as err:
        raise NotApplicable(str(err)) from err
    return TaylorSeerGraphs(guarded=guarded,
                            compute=specialize_guards(guarded, compute=True),
                            forecast=specialize_guards(guarded, compute=False),
                            regions=regions, skipped=skipped)
