"""Pass 5: the compute graph, every guard of the guarded graph resolved to its compute branch.

The schedule is known on the host, so no graph needs a data-dependent branch (Inductor would
lower `torch.cond` to a device->host sync and disable CUDA graphs). Here every region runs and
its tables are updated in place with `aten.copy_` (which dead-code elimination keeps). The
result keeps the guarded graph's inputs minus the guard, so it and the forecast graph
(`take_forecast_branches`) share one calling convention.

Two named passes rather than one taking the branch through `settings`: the branch is no user
option (both graphs are always built), and the pass list then says what each graph is.
"""

from __future__ import annotations

import torch.fx as fx

from ..options import TaylorSeerOptions
from ._surgery import resolve_guards


def take_compute_branches(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """The compute graph: every guard resolved to its region, which also updates its tables.

    A copy; the guarded `gm` is left as it is."""
    return resolve_guards(gm, compute=True)
