"""Regions and module paths: the Region record, module-path normalisation, module stacks, the
model's declared block lists, example values."""

from __future__ import annotations

import dataclasses
import re
import weakref

import torch
import torch.fx as fx


def block_of(model: torch.nn.Module, module: torch.nn.Module,
             block_lists: frozenset[str]) -> str | None:
    """Where `module` sits in `model`'s block stack, as a region name: "transformer_blocks.*"
    for a block, "transformer_blocks.*.ff" for a part of one; None outside the stack."""
    paths = _MODULE_PATHS.get(model)
    if paths is None or id(module) not in paths:  # first time, or the tree changed since
        paths = _MODULE_PATHS[model] = {id(m): path for path, m in model.named_modules()}
    path = paths.get(id(module))
    if path is None:
        return None
    for stack in block_lists:
        prefix = f"{stack}." if stack else ""
        if path.startswith(prefix):
            index, _, inner = path[len(prefix):].partition(".")
            if index.isdigit():
                return ".".join(p for p in (stack, "*", inner) if p)
    return None


_MODULE_PATHS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[int, str]]" = \
    weakref.WeakKeyDictionary()


def declared_block_lists(model) -> frozenset[str]:
    """Paths of the model's block stack as its module tree says: the outermost module lists whose
    children are all of one class the model declares as its block (diffusers'
    `_repeated_blocks` and `_no_split_modules`), or wrap one (HiDream's `HiDreamBlock`). Empty
    for models that declare nothing."""
    if not isinstance(model, torch.nn.Module):
        return frozenset()
    declared = set()
    for attribute in ("_repeated_blocks", "_no_split_modules"):
        declared.update(n for n in (getattr(type(model), attribute, None) or ()) if isinstance(n, str))
    def is_block(child: torch.nn.Module) -> bool:  # a declared block, or a thin wrapper of one
        return type(child).__name__ in declared or any(
            type(inner).__name__ in declared for inner in child.children())

    lists = []
    for path, module in model.named_modules():
        children = list(module.named_children())
        classes = {type(child).__name__ for _, child in children}
        if children and all(name.isdigit() for name, _ in children) and len(classes) == 1 \
                and all(is_block(child) for _, child in children):
            lists.append(path)
    depth = min((p.count(".") + bool(p) for p in lists), default=0)
    return frozenset(p for p in lists if p.count(".") + bool(p) == depth)


@dataclasses.dataclass
class Region:
    """A subgraph whose outputs are forecast: one call of one module (a block, or a cut's match)."""

    name: str  # module path, plus "@k" when the same module is called more than once
    module_class: str
    nodes: list[fx.Node]  # in graph order
    inputs: list[fx.Node]  # values the region reads from outside
    outputs: list[fx.Node]  # region values read outside the region
    live: list[bool] = dataclasses.field(default_factory=list)  # per output: carries Taylor state

    @property
    def live_outputs(self) -> list[fx.Node]:
        return [out for out, is_live in zip(self.outputs, self.live) if is_live]


def normalize_module_path(raw: str) -> str:
    """Dotted module path relative to the compiled root, whatever Dynamo's source spelling.

    `L['self'].blocks.1.norm`, `L['self'].__dict__['_modules']['transformer_blocks'].0` (diffusers'
    ModelMixin) and `L['function_reference'].forward.__self__...` (diffusers hooks) all map to
    plain `blocks.1.norm` / `transformer_blocks.0`.
    """
    path = re.sub(r"\.?(?:__dict__\[['\"]_modules['\"]\]|_modules)\[['\"]([^'\"]+)['\"]\]", r".\1", raw)
    path = re.sub(r"^L\[['\"][^'\"]*['\"]\]", "", path)
    path = re.sub(r"^(?:\.forward\.__self__|\.__self__)+", "", path)
    path = re.sub(r"\[['\"]([^'\"]+)['\"]\]", r".\1", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    return path.strip(".")


def module_stack(node: fx.Node) -> list[tuple[str, str, str]]:
    """(call key, normalised path, class qualname) from outermost to innermost module."""
    stack = node.meta.get("nn_module_stack") or {}
    entries = []
    for key, value in stack.items():
        raw_path, cls = value
        cls_name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        entries.append((str(key), normalize_module_path(str(raw_path)), cls_name))
    return entries


def example_value(node: fx.Node):
    return node.meta.get("example_value", node.meta.get("val"))


def is_tensor_value(node: fx.Node) -> bool:
    return isinstance(example_value(node), torch.Tensor)
