"""Pass 1: flag the nodes Dynamo kept although nothing reads them.

They are there for an effect (an in-place write, vmap nesting, an assert, autocast): once the
later passes cut regions out and delete dead code, "nothing reads it" no longer tells such a node
from one the surgery made dead, so the flag is set first, on the graph as Dynamo hands it over
(`analysis.side_effects.has_effect` reads it).
"""

from __future__ import annotations

import logging

import torch.fx as fx

from ..analysis.side_effects import KEPT_FOR_EFFECT
from ..options import TaylorSeerOptions
from ._contract import report

log = logging.getLogger(__name__)


def mark_side_effects(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """Flag the nodes nothing reads: Dynamo kept them for an effect (a write, an assert).

    Sets `meta["ts_kept_for_effect"]` (placeholders, get_attr and the output aside)."""
    flagged = 0
    for node in gm.graph.nodes:
        if node.op not in ("placeholder", "output", "get_attr") and not node.users:
            node.meta[KEPT_FOR_EFFECT] = True
            flagged += 1
    report(gm, log, "mark_side_effects: %d nodes kept for their effect", flagged)
    return gm
