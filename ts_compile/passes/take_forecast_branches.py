"""Pass 6: the forecast graph, every guard of the guarded graph resolved to its forecast branch.

The regions disappear, and so does everything that only fed them (embedders, rotary tables,
in-place writes only the regions read) once dead code is eliminated; writes and effects something
else observes stay (`analysis.side_effects`). Each live output becomes the polynomial evaluated
from its table. Same inputs as the compute graph (`take_compute_branches`, which says why these
are two passes).
"""

from __future__ import annotations

import torch.fx as fx

from ..options import TaylorSeerOptions
from ._surgery import resolve_guards


def take_forecast_branches(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """The forecast graph: every guard resolved to its region's forecast from the tables.

    A copy; the guarded `gm` is left as it is."""
    return resolve_guards(gm, compute=False)
