"""The pass contract: a pass is `(gm, settings) -> gm`; passes talk through `gm.meta` under the
keys below; a pass that finds the rewrite cannot apply raises `NotApplicable` with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch.fx as fx

from ..options import TaylorSeerOptions

Pass = Callable[[fx.GraphModule, TaylorSeerOptions], fx.GraphModule]

# Set by the caller before the passes: paths of the module lists the model's own module tree
# declares as its block stack (see `analysis.regions.declared_block_lists`); empty when the model
# is not known or declares nothing.
BLOCK_LISTS_KEY = "ts_declared_block_lists"
# Set by the caller when the whole graph is (part of) one block: Dynamo compiled a frame of a
# block's own forward (a graph break in the model's loop), shared by every block of the list.
WHOLE_GRAPH_REGION_KEY = "ts_whole_graph_region"
# Left by the passes for the next pass and for `ts_compile.explain`.
REGIONS_KEY = "ts_regions"  # find_regions: the regions to forecast
SKIPPED_KEY = "ts_skipped_regions"  # find_regions: (name, reason) of regions computed every step
GUARDS_KEY = "ts_guards"  # insert_guards: where it put the tables (GuardInfo)
# Node meta flag (insert_guards): the node exists to satisfy cond's aliasing rules only.
COND_ONLY = "ts_cond_only"
# Left by every pass (`report`): one line on what it changed; `build_graphs` collects them, in
# order, for `ts_compile.explain`.
REPORT_KEY = "ts_pass_report"


def report(gm: fx.GraphModule, log: logging.Logger, message: str, *args: object) -> None:
    """Log what a pass changed (info, `message % args`) and leave the line for `explain`."""
    log.info(message, *args)
    gm.meta[REPORT_KEY] = message % args


class NotApplicable(Exception):
    """The rewrite cannot apply to this graph; the message says why."""
