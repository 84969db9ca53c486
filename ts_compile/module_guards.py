"""Dynamo's module guards moved from every call to every generation.

Dynamo guards a compiled model's module tree on every call: each parameter's dtype, device, shape
and strides, each attribute the trace read, each hooks dict. On a forecast step of a small model
these guards cost more than the forecast graph (docs/performance.md, "Call overhead").
`torch.compiler.skip_guard_on_all_nn_modules_unsafe` drops them, and with them every check that
the model was not edited after compiling: an edited attribute then runs the stale graph, silently.

`skip_module_guards` drops the same guards and has the runtime check the module tree once per
generation instead, at its first step (a computed step; `ModuleSnapshot.changes`): the attribute
values (by identity), the submodules, parameters and buffers (by identity, with their dtype,
device, shape and strides) and the hooks dicts' sizes against a snapshot taken when the graph was
compiled. An edit found there raises `ModelEditedError`, naming what changed and the fix. Guards
outside the module tree stay as they are (the inputs' shapes, dtypes, strides and devices, the
grad mode, globals), so a changed input still recompiles.

What it does not see: an edit inside a container attribute (a list or dict changed in place), and
an edit in the middle of a generation until the next generation starts (a forecast extrapolates
the outputs computed before the edit anyway).
"""

from __future__ import annotations

import operator
import threading
from itertools import chain
from collections.abc import Sequence
from typing import Any

import torch

from . import _compat

__all__ = ["ModelEditedError", "ModuleSnapshot", "skip_module_guards"]

_TREE_DICTS = ("_parameters", "_buffers", "_modules")
# The hooks dicts Dynamo guards (torch/_dynamo/variables/nn_module.py): the ones a forward runs.
# `_forward_hooks_always_called` only flags entries of `_forward_hooks`; the state-dict hooks
# never run in a forward.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


class ModelEditedError(RuntimeError):
    """The model was edited after it was compiled with `skip_module_guards`."""


def _tensor_facts(tensor: torch.Tensor) -> tuple:
    return tensor.dtype, tensor.device, tuple(tensor.shape), tensor.stride()


def _module_facts(module: torch.nn.Module) -> dict[str, Any]:
    """What a module's graph may depend on: attributes (kept by identity), tree entries (by
    identity, tensors with their layout) and the number of hooks of each kind."""
    facts: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name in _TREE_DICTS:
            for key, entry in value.items():
                facts[f"{name}[{key!r}]"] = entry
                if isinstance(entry, torch.Tensor):
                    facts[f"{name}[{key!r}] layout"] = _tensor_facts(entry)
        elif name in _HOOK_DICTS:
            facts[f"{name} count"] = len(value)
        else:
            facts[name] = value
    return facts


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # Layout tuples, hook counts and equal small constants rebuilt by the model's own code.
    if isinstance(a, (tuple, int, float, str, bool)) and type(a) is type(b):
        return a == b
    return False


_LAYOUT = operator.attrgetter("dtype", "device", "shape")


class _Fingerprint:
    """A cheap summary of a model's module tree that stays equal as long as nothing
    `_module_facts` sees has changed: every module's attribute and tree dicts (by their version
    tags, which change on any mutation; or, without them, their keys and the identities of their
    values), the hooks dicts' sizes and the tensors' layouts.

    Which dicts, hooks dicts and tensors to read is fixed when the fingerprint is taken; that is
    enough, since any replaced one changes its parent's dict. Everything is read with C-level
    iteration (`map`, `chain`), not a Python loop per module, and the tensors' layouts with one
    C++ call (`_compat.TENSOR_LAYOUT_CHECK`) where torch has it: ~0.05 ms per generation for the
    139 modules of the tiny FLUX model, 0.07-0.12 ms right after a full step, whose work leaves
    these objects out of the caches (`benchmarks/call_overhead.py --count-guards`). A changed
    fingerprint is only a reason to compare the facts (`ModuleSnapshot.changes`); the layout
    check also fails when the thread's dispatch state differs from when it was taken (e.g.
    `torch.inference_mode` against `torch.no_grad`), which costs one comparison."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        attrs = [vars(module) for module in modules]
        self.dicts = attrs + [a[name] for a in attrs for name in _TREE_DICTS]
        self.hooks = [a[name] for a in attrs for name in _HOOK_DICTS if name in a]
        # Each tensor once (a tied weight sits in two modules; the C++ check refuses repeats).
        self.tensors = list({id(t): t for a in attrs for name in _TREE_DICTS
                             for t in a[name].values() if isinstance(t, torch.Tensor)}.values())
        self.dict_version = _compat.DICT_VERSION
        # Without version tags the values are compared by id: hold them, so that no id is reused.
        self.alive = (None if self.dict_version is not None else
                      list(chain.from_iterable(map(dict.values, self.dicts))))
        make_check = _compat.TENSOR_LAYOUT_CHECK
        self.layouts_unchanged = None if make_check is None else make_check(self.tensors)
        self.value = self.read()

    def read(self) -> tuple:
        if self.dict_version is not None:
            tree = list(map(self.dict_version, self.dicts))
        else:
            values = chain.from_iterable(map(dict.values, self.dicts))
            tree = list(chain.from_iterable(self.dicts)), list(map(id, values))
        if self.layouts_unchanged is not None:
            layouts = self.layouts_unchanged(*self.tensors)
        else:
            layouts = (list(map(_LAYOUT, self.tensors)),
                       list(map(torch.Tensor.stride, self.tensors)))
        return tree, list(map(len, self.hooks)), layouts

    def unchanged(self) -> bool:
        return self.read() == self.value


class ModuleSnapshot:
    """The facts of every module of a model at one moment, to compare with later."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.facts = {path: _module_facts(m) for path, m in self.modules.items()}
        self.fingerprint = _Fingerprint(list(self.modules.values()))

    def changes(self, model: torch.nn.Module) -> list[str]:
        """What differs in `model` from the snapshot ("" paths are the root)."""
        if model is not self.model:
            return [f"another model instance ({type(model).__name__} at {id(model):#x}) runs a "
                    "graph compiled for the first one"]
        # The fast path, every generation of an unedited model: the same root and the same
        # children in every module's `_modules` is the same tree.
        if self.fingerprint.unchanged():
            return []
        modules = dict(model.named_modules())
        now = {path: _module_facts(m) for path, m in modules.items()}
        found: list[str] = []
        for path in sorted(self.facts.keys() | now.keys()):
            before, after = self.facts.get(path), now.get(path)
            where = path or "the model"
            if before is None or after is None or self.modules[path] is not modules[path]:
                continue  # added, removed or replaced: its parent's `_modules` entry says so
            for key in sorted(before.keys() | after.keys()):
                if key not in before or key not in after:
                    found.append(f"{where}.{key}: {'added' if key not in before else 'removed'}")
                elif not _same(before[key], after[key]):
                    was, now_is = _short(before[key]), _short(after[key])
                    if was == now_is and was.startswith("a "):
                        now_is = "another" + now_is[1:]
                    found.append(f"{where}.{key}: {was} -> {now_is}")
        if not found:  # a write that changed nothing the graph depends on: compare with it now
            self.fingerprint = _Fingerprint(list(modules.values()))
        return found

    def verify(self, model: torch.nn.Module) -> None:
        found = self.changes(model)
        if found:
            listed = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
            raise ModelEditedError(
                f"ts_compile: the model was edited after torch.compile ({listed}). It was compiled "
                "with guard_filter_fn=ts_compile.skip_module_guards, so Dynamo does not recompile "
                "for module edits: compile again after editing (torch._dynamo.reset(), then "
                "torch.compile), or drop the guard filter to let Dynamo recompile by itself.")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape)} {value.dtype}"
    if isinstance(value, torch.nn.Module):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The graph compiled last on this thread, waiting for Dynamo to build its guards: the filter runs
# right after the backend returns, on the same thread (torch._dynamo.guards.CheckFunctionManager).
_compiled = threading.local()


def compiled_now(runtime: Any, model: torch.nn.Module | None) -> None:
    """Called by the backend for each graph it returns (runtime None for a plain compile)."""
    _compiled.last = (runtime, model)


def skip_module_guards(entries: Sequence[Any]) -> list[bool]:
    """A `guard_filter_fn` for `torch.compile(..., options={"guard_filter_fn": ...})`: drop the
    guards on the module tree, and check the module tree once per generation instead."""
    runtime, model = getattr(_compiled, "last", (None, None))
    _compiled.last = (None, None)
    # The graph whose guards these are must be the one the backend just returned: its frame's
    # `self` is the model (a compile by another backend, or a frame of one block after a graph
    # break, keeps every guard).
    ours = runtime is not None and model is not None and any(
        entry.has_value and entry.value is model for entry in entries)
    if ours:
        runtime.module_snapshot = ModuleSnapshot(model)
    keep_modules = not ours  # nothing would check the module tree per generation: keep them
    return [keep_modules or not entry.orig_guard.source.is_unspecialized_nn_module()
            for entry in entries]
