"""Count the collectives (all-to-all, all-gather, all-reduce, ...) of a graph and of each region.

Read-only: nothing is rewritten. A forecast step skips every region, and with it the collectives
inside (diffusers' context parallelism puts its all-to-all / all-gather inside the attention of
each block, tensor parallelism its all-reduce after each row-wise Linear); the runtime multiplies
these counts by the forecast steps for `ts_compile.stats`.

What counts as one collective, on a graph from Dynamo:
- a functional collective `torch.ops._c10d_functional.<op>` (or its `_autograd` / `c10d`
  variants), except `wait_tensor`, which completes the collective before it;
- a DTensor `redistribute` whose placements change in a way that moves data: Partial -> Replicate
  is an all-reduce, Partial -> Shard a reduce-scatter, Shard -> Replicate an all-gather,
  Shard(i) -> Shard(j) an all-to-all; Replicate -> anything is local (no communication).
Collectives that DTensor's sharding propagation inserts inside an ordinary op are not visible in
a Dynamo graph and are not counted (diffusers' tensor-parallel plans insert none).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.fx as fx

from .regions import example_value

log = logging.getLogger(__name__)

_NAMESPACES = ("_c10d_functional", "_c10d_functional_autograd", "c10d")
_KINDS = (("all_to_all", "all_to_all"), ("alltoall", "all_to_all"),
          ("all_gather", "all_gather"), ("allgather", "all_gather"),
          ("reduce_scatter", "reduce_scatter"), ("all_reduce", "all_reduce"),
          ("allreduce", "all_reduce"), ("broadcast", "broadcast"))


def _functional_kind(target) -> str | None:
    name = str(target)  # "_c10d_functional.all_to_all_single[.default]"
    namespace, _, op = name.partition(".")
    if namespace not in _NAMESPACES:
        return None  # and wait_tensor, _wrap_tensor_autograd...: no communication of their own
    return next((kind for prefix, kind in _KINDS if op.startswith(prefix)), None)


def _placement_change(src, dst) -> str | None:
    if src == dst or src.is_replicate():
        return None
    moves = {("partial", "replicate"): "all_reduce", ("partial", "shard"): "reduce_scatter",
             ("shard", "replicate"): "all_gather", ("shard", "shard"): "all_to_all"}
    return moves.get((_placement_type(src), _placement_type(dst)))


def _placement_type(placement) -> str:
    for name in ("partial", "shard", "replicate"):
        if getattr(placement, f"is_{name}")():
            return name
    return "other"


def _redistribute_kinds(node: fx.Node) -> list[str]:
    source = node.args[0] if node.args else None
    before = example_value(source) if isinstance(source, fx.Node) else None
    after = example_value(node)
    src, dst = getattr(before, "placements", None), getattr(after, "placements", None)
    if src is None or dst is None:
        return []
    return [kind for a, b in zip(src, dst) if (kind := _placement_change(a, b))]


# How a Dynamo graph spells DTensor.redistribute: a method call (torch 2.13) or a function named
# "prim_redistribute" with the placements bound inside (torch 2.11).
_REDISTRIBUTE_NAMES = ("redistribute", "prim_redistribute")


def _is_redistribute(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target == "redistribute"
    return (node.op == "call_function"
            and getattr(node.target, "__name__", "") in _REDISTRIBUTE_NAMES)


def collective_kinds(node: fx.Node) -> list[str]:
    """The collectives one node issues (usually none, or one)."""
    if node.op == "call_function":
        kind = _functional_kind(node.target)
        if kind is not None:
            return [kind]
    if _is_redistribute(node):
        return _redistribute_kinds(node)
    return []


def count_collectives(graph: fx.Graph) -> Counter:
    """Collectives by kind in a straight-line graph (e.g. the compute or the forecast graph)."""
    counts: Counter = Counter()
    for node in graph.nodes:
        counts.update(collective_kinds(node))
    return counts


def collectives_per_region(guarded: fx.GraphModule) -> dict[str, Counter]:
    """Collectives by kind inside each region of the guarded graph (its compute branch)."""
    per_region: dict[str, Counter] = {}
    for cond in guarded.graph.find_nodes(op="call_function", target=torch.ops.higher_order.cond):
        region = cond.meta.get("ts_region")
        branch = getattr(guarded, cond.args[1].target, None)
        if region is None or branch is None:
            continue
        per_region[region] = count_collectives(branch.graph)
    found = {name: sum(c.values()) for name, c in per_region.items() if c}
    if found:
        log.info("count_collectives: %d collectives inside %d regions (%s)", sum(found.values()),
                 len(found), ", ".join(f"{n}: {c}" for n, c in list(found.items())[:4]))
    return per_region
