"""Graph surgery the passes share: copy a graph module, resolve every guard to one branch,
delete dead code and re-sort, all mindful of in-place writes (`analysis.side_effects`).

Private: these are helpers, not passes; `take_compute_branches` and `take_forecast_branches` are
the passes built on `resolve_guards`.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict

import torch
import torch.fx as fx

from ..analysis.side_effects import live_nodes
from ._contract import COND_ONLY, GUARDS_KEY, REGIONS_KEY, SKIPPED_KEY, report

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


def resolve_guards(gm: fx.GraphModule, compute: bool) -> fx.GraphModule:
    """A copy of the guarded `gm` with every guard resolved to `compute` (the guarded graph is
    left as it is): each cond becomes the inlined body of one branch, the cond-only clones are
    dropped, the `ts_compute` input goes, dead code is eliminated and the branch submodules are
    deleted. The copy keeps the guarded graph's inputs minus the guard."""
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
    report(out, log, "take_%s_branches: %d guards resolved, %d nodes left, %d dead ones removed",
           "compute" if compute else "forecast", len(conds),
           sum(1 for n in graph.nodes if n.op not in ("placeholder", "output")), removed)
    return out


def eliminate_dead_code(gm: fx.GraphModule) -> int:
    """Erase what neither reaches the output nor has an observable effect; returns the count."""
    live = live_nodes(gm.graph)
    dead = [node for node in gm.graph.nodes if node not in live]
    for node in reversed(dead):
        gm.graph.erase_node(node)
    return len(dead)


def stable_topological_sort(graph: fx.Graph,
                            after: dict[fx.Node, set[fx.Node]] | None = None) -> None:
    """Reorder `graph` so every node follows its inputs (and the nodes `after[node]` names, e.g.
    from `write_order`), moving as little as possible: a node is only delayed until what it needs
    has run; everything else keeps its relative order."""
    nodes = list(graph.nodes)
    present = set(nodes)
    position = {node: i for i, node in enumerate(nodes)}
    after = after or {}
    needs = {node: set(node.all_input_nodes) | (after.get(node, set()) & present) for node in nodes}
    waiting_on: dict[fx.Node, list[fx.Node]] = defaultdict(list)
    missing = {}
    ready: list[tuple[int, int]] = []
    for node in nodes:
        missing[node] = len(needs[node])
        for dep in needs[node]:
            waiting_on[dep].append(node)
        if not needs[node]:
            heapq.heappush(ready, (position[node], id(node)))
    by_id = {id(node): node for node in nodes}
    order = []
    while ready:
        node = by_id[heapq.heappop(ready)[1]]
        order.append(node)
        for user in waiting_on[node]:
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(ready, (position[user], id(user)))
    if len(order) != len(nodes):
        stuck = [n.name for n in nodes if missing[n] > 0][:5]
        raise RuntimeError(f"ts_compile: no order satisfies the graph's dependencies ({stuck})")
    cursor = order[0]
    for node in order[1:]:
        if cursor.next is not node:
            cursor.append(node)
        cursor = node
