"""The FX passes, one per file, each `(gm, settings) -> gm`, logging what it changed:

    mark_side_effects       flag what Dynamo kept only for its effect, before any surgery
    find_regions            which subgraphs to forecast (module stack; no per-model adapter)
    mark_live_outputs       which region outputs carry Taylor state
    insert_guards           each region -> torch.cond(compute, region + state update, forecast)
    take_compute_branches   the guarded graph -> the compute graph
    take_forecast_branches  the guarded graph -> the forecast graph

`build_graphs` runs `PASSES` in order on a copy of the graph Dynamo hands the backend (the
result is the guarded graph), then each of `SPECIALIZATIONS` on the guarded graph. A pass that
finds the rewrite cannot apply raises `NotApplicable`, and the backend compiles the graph plainly.
Read-only questions the passes ask (regions, side effects, the paper cut, collectives) live in
`ts_compile.analysis`.
"""

from __future__ import annotations

import dataclasses

import torch.fx as fx

from ..analysis.regions import Region, block_of, declared_block_lists, normalize_module_path
from ..options import TaylorSeerOptions
from ._contract import (BLOCK_LISTS_KEY, GUARDS_KEY, REGIONS_KEY, REPORT_KEY, SKIPPED_KEY,
                        WHOLE_GRAPH_REGION_KEY, NotApplicable, Pass)
from ._surgery import copy_graph_module
from .find_regions import find_regions
from .insert_guards import GuardInfo, TableSpec, insert_guards
from .mark_live_outputs import mark_live_outputs
from .mark_side_effects import mark_side_effects
from .take_compute_branches import take_compute_branches
from .take_forecast_branches import take_forecast_branches

__all__ = [
    "PASSES", "SPECIALIZATIONS", "GuardInfo", "NotApplicable", "Pass", "Region", "TableSpec",
    "TaylorSeerGraphs", "all_passes", "block_of", "build_graphs", "copy_graph_module",
    "declared_block_lists", "find_regions", "insert_guards", "mark_live_outputs",
    "mark_side_effects", "normalize_module_path", "take_compute_branches",
    "take_forecast_branches",
]

# Run in this order on a copy of Dynamo's graph; the result is the guarded graph.
PASSES: tuple[Pass, ...] = (mark_side_effects, find_regions, mark_live_outputs, insert_guards)
# Each run on the guarded graph (left as it is): the compute graph, the forecast graph.
SPECIALIZATIONS: tuple[Pass, ...] = (take_compute_branches, take_forecast_branches)


def all_passes() -> tuple[Pass, ...]:
    """Every pass `build_graphs` runs, in order (what `python -m ts_compile explain` lists)."""
    return PASSES + SPECIALIZATIONS


@dataclasses.dataclass
class TaylorSeerGraphs:
    guarded: fx.GraphModule
    compute: fx.GraphModule
    forecast: fx.GraphModule
    regions: list[Region]
    skipped: list[tuple[str, str]]  # (region name, reason it is computed on every step)
    reports: list[str] = dataclasses.field(default_factory=list)  # each pass's line, in order

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
    then the whole graph is the region. Raises `NotApplicable` (from the pass that decided).
    """
    guarded = copy_graph_module(gm)
    guarded.meta[BLOCK_LISTS_KEY] = block_lists
    guarded.meta[WHOLE_GRAPH_REGION_KEY] = whole_graph_region
    reports = []
    for run in PASSES:
        guarded = run(guarded, settings)
        reports.append(guarded.meta.pop(REPORT_KEY))
    compute, forecast = (take(guarded, settings) for take in SPECIALIZATIONS)
    reports += [compute.meta.pop(REPORT_KEY), forecast.meta.pop(REPORT_KEY)]
    return TaylorSeerGraphs(guarded=guarded, compute=compute, forecast=forecast,
                            regions=guarded.meta[REGIONS_KEY], skipped=guarded.meta[SKIPPED_KEY],
                            reports=reports)
