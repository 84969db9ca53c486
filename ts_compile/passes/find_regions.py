"""Pass 2: find the regions to forecast from `nn_module_stack`, with no per-model adapter.

cut="block": a region is one call of a transformer block, i.e. a numbered child of the model's
block stack: the module lists the model's module tree declares as its blocks, or else the
outermost lists of one non-leaf class whose children run attention (see `_block_selector`). cut=[regex, ...]: a region is one call of the outermost module whose path
matches one of the expressions. Regions that cannot be forecast safely (cycles through outside
code, in-place writes to outside values, non-tensor outputs) are skipped with the reason; when
none is left, the rewrite does not apply (`NotApplicable`, naming what was looked for).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
from torch.fx.passes.utils.fuser_utils import validate_partition

from ..analysis.gated_branches import select_gated_branches
from ..analysis.regions import Region, example_value, is_tensor_value, module_stack
from ..analysis.side_effects import has_effect, storages, written_values
from ..options import TaylorSeerOptions
from ._contract import (BLOCK_LISTS_KEY, REGIONS_KEY, SKIPPED_KEY, WHOLE_GRAPH_REGION_KEY,
                        NotApplicable, report)

log = logging.getLogger(__name__)

_INDEXED = re.compile(r"(?:(.*)\.)?(\d+)")  # "blocks.3", or "3" when the root is the list


def _is_attention(node: fx.Node) -> bool:
    """An attention kernel, fused (scaled_dot_product_attention, flex/flash attention) or
    written out (its softmax): the compute a transformer block is built around."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    name = str(name or node.target).lower()
    return "attention" in name or "softmax" in name


def _block_selector(nodes: list[fx.Node], declared: frozenset[str] = frozenset()):
    """Select (path, class) pairs that are the children of the model's block stack.

    When the model's module tree declares its block lists (`declared`, see
    `regions.declared_block_lists`), those are the stack, with any number of blocks, and nothing
    else is: a graph that holds only a text refiner after a graph break gets no region.
    Otherwise the graph decides: candidates are module lists whose numbered children are called,
    all of one class that is not a torch.nn leaf module (the Linears of a `Sequential(Linear,
    SiLU, Linear)` embedder are no blocks; a `Sequential` of layers is); the stack is the
    candidates whose children run attention, with one block enough (tiny configs), or, if none
    does, those with two or more children. Only the outermost such level counts: lists nested
    deeper (HunyuanVideo's token refiner under `context_embedder`) belong to the embedding work.
    """
    children: dict[str, dict[str, str]] = defaultdict(dict)  # list path -> index -> class
    composite: set[str] = set()  # paths of modules that call other modules
    attending: set[str] = set()  # paths of modules inside which attention runs
    for node in nodes:
        stack = module_stack(node)
        for depth, (_, path, cls) in enumerate(stack):
            match = _INDEXED.fullmatch(path)
            if match:
                children[match.group(1) or ""][match.group(2)] = cls
            if depth + 1 < len(stack):
                composite.add(path)
        if _is_attention(node):
            attending.update(path for _, path, _ in stack)

    def member(parent: str, index: str) -> str:
        return f"{parent}.{index}".lstrip(".")

    candidates = {}
    for parent, members in children.items():
        classes = set(members.values())
        if len(classes) != 1:
            continue
        cls = classes.pop()
        if not cls.startswith("torch.nn.modules.") or all(
                member(parent, i) in composite for i in members):
            candidates[parent] = (cls, members)
    if declared:
        stacks = {parent: cls for parent, (cls, _) in candidates.items() if parent in declared}
    else:
        stacks = {parent: cls for parent, (cls, members) in candidates.items()
                  if any(member(parent, i) in attending for i in members)}
        if not stacks:
            stacks = {parent: cls for parent, (cls, members) in candidates.items()
                      if len(members) >= 2}
        depth = min((p.count(".") + bool(p) for p in stacks), default=0)
        stacks = {p: c for p, c in stacks.items() if p.count(".") + bool(p) == depth}

    def select(path: str, cls: str) -> bool:
        match = _INDEXED.fullmatch(path)
        return bool(match) and stacks.get(match.group(1) or "") == cls

    return select


def _pattern_selector(patterns: tuple[str, ...]):
    compiled = [re.compile(p) for p in patterns]
    return lambda path, cls: any(p.fullmatch(path) for p in compiled)


def _storages_of(values) -> frozenset:
    return frozenset().union(*(storages(v) for v in values))


def _interleaved(region: Region, position: dict[fx.Node, int], nodes: list[fx.Node]) -> list[fx.Node]:
    """Outside nodes that sit between the region's first and last node in graph order."""
    members = set(region.nodes)
    first, last = position[region.nodes[0]], position[region.nodes[-1]]
    return [n for n in nodes[first + 1:last] if n not in members]


def _why_unsupported(region: Region, position: dict[fx.Node, int],
                     nodes: list[fx.Node]) -> str | None:
    """Why the region cannot become one guarded call, or None.

    It is cut out and evaluated at the place of its last node, so nothing outside may depend on
    part of it (convexity), and no in-place write may be crossed: neither a write of the region
    into storage from outside, nor an outside write (or effect) between its nodes.
    """
    if not validate_partition(region.nodes):
        return "its nodes are interleaved with outside code that depends on them (not convex)"
    outside = _storages_of(region.inputs)
    written_inside: set = set()
    for node in region.nodes:
        written = _storages_of(written_values(node))
        if written & outside:
            return f"it writes in place to a value from outside ({node.format_node()})"
        written_inside |= written
    read_inside = outside | _storages_of(region.nodes)
    for node in _interleaved(region, position, nodes):
        if has_effect(node):
            return f"an outside effect sits between its nodes ({node.format_node()})"
        if _storages_of(written_values(node)) & read_inside:
            return f"an outside in-place write between its nodes touches what it reads ({node.format_node()})"
        if written_inside & _storages_of(node.all_input_nodes):
            return f"outside code between its nodes reads what it writes in place ({node.format_node()})"
    for out in region.outputs:
        value = example_value(out)
        if not isinstance(value, torch.Tensor):
            return f"output {out.name} is not a tensor"
        if not value.is_floating_point():
            # Indices, masks, counts (an MoE router's top-k): a polynomial in time of them is
            # no value they can take.
            return f"output {out.name} is a {value.dtype} tensor, not a feature to forecast"
        unbacked = free_unbacked_symbols(value)
        if unbacked:
            return (f"output {out.name}'s size depends on data ({', '.join(sorted(map(str, unbacked)))}): "
                    "no table can be sized for it")
    if not region.outputs:
        return "nothing outside reads its result"
    return None


def _without_free_scalars(nodes: list[fx.Node]) -> list[fx.Node]:
    """Drop scalar (non-tensor) nodes that read nothing computed in the region and are read
    outside it.

    With dynamic shapes Dynamo turns float defaults into inputs read with `.item()` (e.g.
    `dispatch_attention_fn`'s dropout_p, read once in the first block and reused by every later
    one); kept in the region, such a value would be a non-tensor output and the whole block would
    be computed on every step. Outside it, it is just one more input of the region. Scalar calls
    that only the region reads, or nobody (vmap's nesting counters), stay where they are.
    """
    members = set(nodes)
    kept: set[fx.Node] = set()
    for node in nodes:  # graph order: a node's inputs come before it
        if (is_tensor_value(node) or any(arg in kept for arg in node.all_input_nodes)
                or all(user in members for user in node.users)):
            kept.add(node)
    return [node for node in nodes if node in kept]


def _with_unattributed(region_nodes: list[fx.Node], nodes: list[fx.Node],
                       position: dict[fx.Node, int]) -> list[fx.Node]:
    """Add the nodes between the region's nodes that Dynamo attributed to no module (e.g. the
    `_vmap_decrement_nesting` closing a vmap the block opened, an autocast enter/exit pair around
    part of the block) and that only the region reads: they are part of the module's call, and
    left outside they would split it.

    The largest such set: candidates that read or feed a node outside the region and its
    candidates are dropped until none is left to drop (an enter/exit pair reads and feeds only
    each other, so it joins as a pair)."""
    members = set(region_nodes)
    first, last = position[region_nodes[0]], position[region_nodes[-1]]
    joining = {node for node in nodes[first + 1:last]
               if node not in members and not module_stack(node)}
    changed = True
    while changed:
        inside = members | joining
        dropped = {node for node in joining
                   if not node.users.keys() <= inside
                   or not all(arg in inside or arg.op in ("placeholder", "get_attr")
                              or position.get(arg, -1) < first for arg in node.all_input_nodes)}
        joining -= dropped
        changed = bool(dropped)
    return sorted(members | joining, key=position.__getitem__)


def _group(nodes: list[fx.Node], pick) -> dict[str, Region]:
    """Group nodes by the module call `pick(stack)` chooses from their module stack."""
    grouped: dict[str, Region] = {}
    for node in nodes:
        entry = pick(module_stack(node))
        if entry is not None:
            key, path, cls = entry
            suffix = key[key.index("@"):] if "@" in key else ""
            grouped.setdefault(key, Region(path + suffix, cls, [], [], [])).nodes.append(node)
    position = {node: i for i, node in enumerate(nodes)}
    for region in grouped.values():
        region.nodes = _without_free_scalars(_with_unattributed(region.nodes, nodes, position))
        members = set(region.nodes)
        region.inputs = list(dict.fromkeys(
            arg for node in region.nodes for arg in node.all_input_nodes if arg not in members))
        region.outputs = [n for n in region.nodes if any(u not in members for u in n.users)]
    return grouped


def _outermost(select):
    """pick: the outermost stack entry `select` accepts."""
    return lambda stack: next((e for e in stack if select(e[1], e[2])), None)


def _child_of_outermost(select):
    """pick: the direct child of the outermost stack entry `select` accepts (the paper's cut)."""
    def pick(stack):
        for depth, entry in enumerate(stack):
            if select(entry[1], entry[2]):
                return stack[depth + 1] if depth + 1 < len(stack) else None
        return None
    return pick


def _grouped_regions(gm: fx.GraphModule, nodes: list[fx.Node],
                     settings: TaylorSeerOptions) -> dict[str, Region]:
    """The candidate regions of the cut, before any is checked."""
    declared = frozenset(gm.meta.get(BLOCK_LISTS_KEY, ()))
    whole = gm.meta.get(WHOLE_GRAPH_REGION_KEY)
    if whole is not None:  # the graph is (part of) one block, whatever the cut
        name, cls = whole
        return _group(nodes, lambda stack: (name, name, cls))
    if settings.cut == "block":
        return _group(nodes, _outermost(_block_selector(nodes, declared)))
    if settings.cut == "paper":
        select = _block_selector(nodes, declared)
        blocks = _group(nodes, _outermost(select))
        children = _group(nodes, _child_of_outermost(select))
        return select_gated_branches(blocks, children)
    return _group(nodes, _outermost(_pattern_selector(settings.cut)))


def _nothing_found(settings: TaylorSeerOptions, skipped: list[tuple[str, str]]) -> str:
    what = ("no transformer blocks (repeated children of a module list)"
            if settings.cut == "block" else f"no module path matching cut={list(settings.cut)}")
    detail = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
    return f"found {what}" + (f" (skipped {detail})" if detail else "")


def find_regions(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """Find the regions to forecast (blocks, or the cut's modules); skipped ones with a reason.

    Records them in ``gm.meta["ts_regions"]`` and ``gm.meta["ts_skipped_regions"]``; raises
    `NotApplicable` when there is none to forecast."""
    nodes = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    grouped = _grouped_regions(gm, nodes, settings)
    position = {node: i for i, node in enumerate(gm.graph.nodes)}
    ordered = list(gm.graph.nodes)
    regions, skipped = [], []
    for region in grouped.values():
        reason = _why_unsupported(region, position, ordered)
        if reason:
            skipped.append((region.name, reason))
            log.warning("ts_compile: region %s is computed on every step: %s", region.name, reason)
        else:
            regions.append(region)

    gm.meta[REGIONS_KEY] = regions
    gm.meta[SKIPPED_KEY] = skipped
    report(gm, log, "find_regions: %d regions (%s), %d skipped", len(regions),
             ", ".join(r.name for r in regions[:4]) + (" ..." if len(regions) > 4 else ""),
             len(skipped))
    if not regions:
        raise NotApplicable(_nothing_found(settings, skipped))
    return gm
