"""Pass 3: decide which region outputs carry Taylor state.

On a forecast step every region is replaced by its forecast at once, so a region output that only
feeds other regions (block i -> block i+1), directly or through outside code that itself only
feeds regions, is never read. Only outputs reachable backwards from the graph's output (or from
a kept effect: an observable in-place write, an assert) without passing through a region are live;
only they get a table. For a chain of
blocks that is the last block's output: state memory is (order + 1) x live outputs, not x blocks.
When no output is live, nothing needs a forecast and the rewrite does not apply (`NotApplicable`).
"""

from __future__ import annotations

import logging

import torch.fx as fx

from ..analysis.side_effects import live_nodes as live_values
from ..options import TaylorSeerOptions
from ._contract import REGIONS_KEY, NotApplicable, report

log = logging.getLogger(__name__)


def mark_live_outputs(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """Mark the region outputs read outside the regions: only they carry Taylor state.

    Sets ``region.live`` for every region in ``gm.meta["ts_regions"]``; raises `NotApplicable`
    when none is live."""
    regions = gm.meta[REGIONS_KEY]
    owner = {node: region for region in regions for node in region.nodes}
    # What a forecast step needs: regions are opaque (reached, never entered), in-place writes
    # count only when something outside the regions reads what they wrote.
    live_nodes = {node for node in live_values(gm.graph, opaque=owner.keys()) if node in owner}

    for region in regions:
        region.live = [out in live_nodes for out in region.outputs]
        hidden = [n.name for n in live_nodes if owner.get(n) is region and n not in region.outputs]
        assert not hidden, f"live non-output nodes in {region.name}: {hidden}"
    count = sum(sum(r.live) for r in regions)
    report(gm, log, "mark_live_outputs: %d of %d region outputs are live", count,
             sum(len(r.outputs) for r in regions))
    if not count:
        raise NotApplicable("no region output reaches the graph's output")
    return gm
