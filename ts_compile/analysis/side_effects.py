"""What the graph surgery must never lose: in-place writes and other side effects, in their order.

Dynamo hands the backend a torch-level graph that still holds in-place writes (``x[i] = v``,
``t.copy_(s)``, ``masked_fill_``, ``+=``) and calls kept only for their effect (vmap nesting,
asserts, autocast). The passes cut regions out and delete what a forecast step no longer needs;
these functions say what may go and in which order the rest must run:

- A *write* is observable when the storage it writes belongs to a graph input (a user tensor, a
  parameter, a buffer) or is read, after the write, by a node that is itself kept. Aliasing comes
  from the fake tensors Dynamo traced with (a view shares its base's storage), not from a list of
  view ops.
- Any other node that Dynamo kept although nothing reads it (a user-less node in the graph it
  handed over) or that torch.fx calls impure is kept for its effect.
- Which reads and writes of a written storage must keep their order (`write_order`); the passes
  sort with it after the surgery (`passes._surgery.stable_topological_sort`), and a region whose
  collapse into one point would move a read across a write is refused by `find_regions`.

Read-only: the `mark_side_effects` pass sets the flag `has_effect` reads; the passes' private
`_surgery` module deletes and reorders with these answers.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Collection

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.multiprocessing.reductions import StorageWeakRef

from .regions import example_value

KEPT_FOR_EFFECT = "ts_kept_for_effect"  # node meta flag, set by the `mark_side_effects` pass

_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.ifloordiv, operator.imod, operator.ipow, operator.iand,
                      operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                      operator.imatmul, operator.setitem}


def _is_inplace_name(name: str) -> bool:
    return name.endswith("_") and not name.startswith("_")


def written_values(node: fx.Node) -> list[fx.Node]:
    """The graph values `node` writes in place (usually none, or its first argument)."""
    if node.op == "call_method":
        return _first_node(node) if _is_inplace_name(node.target) else []
    if node.op != "call_function":
        return []
    out = node.kwargs.get("out")
    written = [v for v in pytree.tree_leaves(out) if isinstance(v, fx.Node)]
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        for index, argument in enumerate(schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
                written += [v for v in pytree.tree_leaves(value) if isinstance(v, fx.Node)]
        return list(dict.fromkeys(written))
    # Python's `operator.and_`, `or_`, `not_`, `is_` end in "_" without writing anything: only
    # the operators listed are in-place there; elsewhere (torch.relu_, ...) the name says it.
    python_operator = getattr(node.target, "__module__", None) in ("_operator", "operator")
    if (node.target in _INPLACE_OPERATORS or node.kwargs.get("inplace") is True
            or (not python_operator and _is_inplace_name(getattr(node.target, "__name__", "")))):
        written += _first_node(node)
    return list(dict.fromkeys(written))


def _first_node(node: fx.Node) -> list[fx.Node]:
    first = node.args[0] if node.args else None
    return [first] if isinstance(first, fx.Node) else []


def storages(node: fx.Node) -> frozenset:
    """Identities of the storages behind `node`'s value (a view shares its base's); a tensor
    value without a traced example stands for a storage of its own (the node itself)."""
    value = example_value(node)
    keys = set()
    for leaf in pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            try:
                keys.add(StorageWeakRef(leaf.untyped_storage()))
            except (NotImplementedError, RuntimeError):  # e.g. sparse or nested tensors
                keys.add(node)
    if value is None and node.op != "output":
        keys.add(node)
    return frozenset(keys)


def has_effect(node: fx.Node) -> bool:
    """Kept for its effect whatever reads it (a write is kept only while observable)."""
    if node.op in ("placeholder", "output"):
        return True
    if written_values(node):
        return False
    return bool(node.meta.get(KEPT_FOR_EFFECT)) or (node.op == "call_function" and node.is_impure())


def live_nodes(graph: fx.Graph, opaque: Collection[fx.Node] = ()) -> set[fx.Node]:
    """Nodes whose value or effect reaches the graph's output, an input's storage or an effect.

    Nodes in `opaque` (the regions, when asking what a forecast step needs) may be reached but
    are not entered: their inputs are not followed and they read nothing.
    """
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    observable = {s for node in nodes if node.op in ("placeholder", "get_attr")
                  for s in storages(node)}
    writes = {}
    for node in nodes:
        if node not in opaque:
            targets = written_values(node)
            if targets:
                writes[node] = frozenset().union(*(storages(t) for t in targets))
    readers: dict[object, list[fx.Node]] = defaultdict(list)
    for node in nodes:
        if node not in opaque:
            for key in {s for arg in node.all_input_nodes for s in storages(arg)}:
                readers[key].append(node)

    live: set[fx.Node] = set()
    stack: list[fx.Node] = []

    def keep(node: fx.Node) -> None:
        if node not in live:
            live.add(node)
            if node not in opaque:
                stack.append(node)

    for node in nodes:
        if node in opaque:
            continue
        if has_effect(node) or (node in writes and writes[node] & observable):
            keep(node)
    pending = {w for w in writes if w not in live}
    while True:
        while stack:
            for arg in stack.pop().all_input_nodes:
                keep(arg)
        woken = {w for w in pending if any(
            r in live and r is not w and position[r] > position[w]
            for key in writes[w] for r in readers[key])}
        if not woken:
            return live
        pending -= woken
        for w in woken:
            keep(w)


def write_order(graph: fx.Graph) -> dict[fx.Node, set[fx.Node]]:
    """For each node, the nodes that must run before it because of an in-place write: every
    reader or writer of a written storage keeps its side of the write (taken from the current
    order, so call it before the surgery that disturbs that order)."""
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    touching: dict[object, list[fx.Node]] = defaultdict(list)
    for node in nodes:
        keys = {s for arg in node.all_input_nodes for s in storages(arg)}
        for key in keys:
            touching[key].append(node)
    after: dict[fx.Node, set[fx.Node]] = defaultdict(set)
    for write in nodes:
        for key in {s for target in written_values(write) for s in storages(target)}:
            for other in touching[key]:
                if other is not write:
                    first, then = sorted((write, other), key=position.__getitem__)
                    after[then].add(first)
    return after
