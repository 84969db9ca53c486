"""Pass 4: resolve the guards on the host into two straight-line graphs.

The schedule is known on the host, so no graph needs a data-dependent branch (Inductor would
lower `torch.cond` to a device->host sync and disable CUDA graphs). `specialize_guards(gm, True)`
inlines every compute branch: regions run and their tables are updated in place with
`aten.copy_` (which dead-code elimination keeps). `specialize_guards(gm, False)` inlines every
forecast branch: the regions disappear, and so does everything that only fed them (embedders,
rotary tables, in-place writes only the regions read) once dead code is eliminated; writes and
effects something else observes stay (`side_effects`). Both keep the guarded graph's inputs minus the
guard, so one calling convention serves both.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx

from ..options import TaylorSeerOptions
from .insert_guards import COND_ONLY, GUARDS_KEY
from .regions import REGIONS_KEY, SKIPPED_KEY
from .side_effects import eliminate_dead_code

log = logging.getLogger(__name__)

_CARRIED_META = (REGIONS_KEY, SKIPPED_KEY, GUARDS_KEY, "dynamo_compile_id")


def copy_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A structural copy (new graph and nodes, shared parameters and submodules).

    Keeps what AOTAutograd expects of a Dynamo graph: `_param_name_to_source`, the compile id and
    every placeholder's `_dynamo_source`.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    result = graph.graph_copy(gm.graph, env)
    graph.output(result)
    for old, new in env.items():
        if old.op == "placeholder":
            new._dynamo_source = getattr(old, "_dynamo_source", None)
    copied = fx.GraphModule(gm, graph, gm.__class__.__name__)
    copied.meta.update({k: gm.meta[k] for k in _CARRIED_META if k in gm.meta})
    if hasattr(gm, "_param_name_to_source"):
        copied._param_name_to_source = gm._param_name_to_source
    return copied


def _inline(graph: fx.Graph, call: fx.Node, branch: fx.GraphModule, operands) -> list:
    """Copy `branch`'s body before `call`; return the values of its outputs."""
    env: dict[fx.Node, object] = {}
    placeholders = [n for n in branch.graph.nodes if n.op == "placeholder"]
    env.update(zip(placeholders, operands))
    outputs = None
    with graph.inserting_before(call):
        for node in branch.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outputs = [env[v] for v in node.args[0]]
                continue
            if node.meta.get(COND_ONLY):  # the clone cond needed; a straight-line graph does not
                env[node] = env[node.args[0]]
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
    return outputs


def specialize_guards(gm: fx.GraphModule, compute: bool) -> fx.GraphModule:
    """Return a copy of the guarded `gm` with every guard resolved to `compute`."""
    out = copy_graph_module(gm)
    graph = out.graph
    conds = [n for n in graph.nodes
             if n.op == "call_function" and n.target is torch.ops.higher_order.cond]
    for cond in conds:
        _, true_attr, false_attr, operands = cond.args
        branch = getattr(out, (true_attr if compute else false_attr).target)
        values = _inline(graph, cond, branch, operands)
        for user in list(cond.users):
            user.replace_all_uses_with(values[user.args[1]])
            graph.erase_node(user)
        graph.erase_node(cond)
        for attr in (true_attr, false_attr):
            if not attr.users:
                graph.erase_node(attr)
    pred = next(n for n in graph.nodes if n.op == "placeholder" and n.name == "ts_compute")
    graph.erase_node(pred)
    removed = eliminate_dead_code(out)
    for name, _ in list(out.named_children()):
        if name.startswith(("ts_compute_", "ts_forecast_")):
            delattr(out, name)
    graph.lint()
    out.recompile()
    log.info("specialize_guards(%s): %d nodes, %d dead ones removed",
             "compute" if compute else "forecast",
             sum(1 for n in graph.nodes if n.op not in ("placeholder", "output")), removed)
    return out
