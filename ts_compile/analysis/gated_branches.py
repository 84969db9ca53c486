"""The paper's cut: inside each block, the branch outputs taken *before their gate*.

TaylorSeer's official code forecasts, per block, the outputs of the attention and MLP branches
and still runs the modulation, the gate multiply and the residual add on forecast steps:
``x = x + gate_t * F_hat``. Rather than list those modules per model, a direct child module of a
block is a branch when every value it hands to the rest of the block reaches a *residual add*
through at most a gate multiply and value-preserving ops (casts, views):

    child(...) ─[to/view/...]─> mul(gate) ─[to/view/...]─> add(stream, ·)

where `stream` (or what it casts or views) is an ancestor of the child's own inputs: the
residual stream the branch was computed from. Norms fail the test (their output feeds the
attention, not an add); so does adaLN's `norm(x) * (1 + scale) + shift`, whose `shift` is not an
ancestor of the norm's input. This finds attention/MLP outputs of FLUX, SD3 and HunyuanVideo
double-stream blocks (both streams), the output projection of their single-stream blocks, and
attention/cross-attention/MLP of DiT, PixArt and Wan blocks.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .regions import Region

_TRANSPARENT_METHODS = {"to", "float", "half", "bfloat16", "double", "type", "type_as", "view",
                        "reshape", "unsqueeze", "squeeze", "contiguous", "clone", "flatten"}
_TRANSPARENT_FUNCTIONS = {torch.unsqueeze, torch.squeeze, torch.reshape, torch.flatten,
                          torch.clone}
_MULS = {operator.mul, operator.imul, torch.mul}
_ADDS = {operator.add, operator.iadd, torch.add}


def _kind(node: fx.Node) -> str:
    if node.op == "call_method":
        if node.target in _TRANSPARENT_METHODS:
            return "transparent"
        return {"mul": "mul", "mul_": "mul", "add": "add", "add_": "add"}.get(node.target, "other")
    if node.op == "call_function":
        if node.target in _TRANSPARENT_FUNCTIONS:
            return "transparent"
        if node.target in _MULS:
            return "mul"
        if node.target in _ADDS:
            return "add"
    return "other"


def _in_stream(node, stream: set[fx.Node]) -> bool:
    """`node`, or what it casts or views, is part of the residual stream."""
    while isinstance(node, fx.Node):
        if node in stream:
            return True
        if _kind(node) != "transparent":
            return False
        node = node.args[0]
    return False


def _ancestors(starts: list[fx.Node], scope: set[fx.Node]) -> set[fx.Node]:
    """Nodes `starts` depend on, walking back inside `scope` (values from outside are included)."""
    seen, stack = set(), list(starts)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in scope:
            stack.extend(node.all_input_nodes)
    return seen


def _reaches_residual_add(value: fx.Node, child: set[fx.Node], stream: set[fx.Node],
                          gated: bool = False) -> bool:
    users = [u for u in value.users if u not in child]
    if not users:
        return False
    for user in users:
        kind = _kind(user)
        if kind == "transparent":
            ok = _reaches_residual_add(user, child, stream, gated)
        elif kind == "mul" and not gated:
            ok = _reaches_residual_add(user, child, stream, gated=True)
        elif kind == "add":
            others = [a for a in user.args if isinstance(a, fx.Node) and a is not value]
            ok = len(others) == 1 and _in_stream(others[0], stream)
        else:
            ok = False
        if not ok:
            return False
    return True


def select_gated_branches(blocks: dict[str, Region], children: dict[str, Region]) -> dict[str, Region]:
    """The children of `blocks` whose every output is a gated residual branch."""
    owner = {node: key for key, block in blocks.items() for node in block.nodes}
    selected: dict[str, Region] = {}
    for key, child in children.items():
        block = blocks[owner[child.nodes[0]]]
        scope = set(block.nodes)
        stream = _ancestors(child.inputs, scope)
        members = set(child.nodes)
        if child.outputs and all(_reaches_residual_add(out, members, stream) for out in child.outputs):
            selected[key] = child
    return selected
