"""Pass 5: the compute graph, every guard of the guarded graph resolved to its compute branch.

The schedule is known on the host, so no graph needs a data-dependent branch (Inductor would
lower `torch.cond` to a device->host sync and disable CUDA graphs). Here every region runs and
its tables are updated in place with `aten.copy_` (which dead-code elimination keeps). The
result keeps the guarded graph's inputs minus the guard, so it and the forecast graph
(`take_forecast_branches`) share one calling convention.

With `options.adaptive` the compute graph returns one more output after the model's: the L2
norms of the rows it just wrote, a float32 tensor of shape (tables, order + 1) (`row_norms`, a
reduction Inductor fuses into the kernels writing the rows). The runtime strips it before
returning to Dynamo and makes the next steps' error estimates from it (`ts_compile.adaptive`).

Two named passes rather than one taking the branch through `settings`: the branch is no user
option (both graphs are always built), and the pass list then says what each graph is.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx

from ..options import TaylorSeerOptions
from ..taylor import row_norms, updated_table
from ._surgery import resolve_guards

log = logging.getLogger(__name__)


def take_compute_branches(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """The compute graph: every guard resolved to its region, which also updates its tables.

    A copy; the guarded `gm` is left as it is."""
    compute = resolve_guards(gm, compute=True)
    if settings.adaptive is not None:
        _return_row_norms(compute)
    return compute


def _return_row_norms(gm: fx.GraphModule) -> None:
    """Append the norms of every table's new rows (in table order) to the graph's outputs."""
    graph = gm.graph
    updates = [n for n in graph.nodes if n.op == "call_function" and n.target is updated_table]
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        norms = [graph.call_function(row_norms, (update,)) for update in updates]
        stacked = (graph.call_function(torch.stack, (norms,)) if norms else
                   graph.call_function(torch.zeros, ((0, 1),), {"dtype": torch.float32}))
    results = output.args[0]
    output.args = (type(results)([*results, stacked]),)
    graph.lint()
    gm.recompile()
    log.info("take_compute_branches: the norms of %d tables' rows returned (adaptive)",
             len(updates))
