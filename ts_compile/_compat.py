"""What differs between the torch versions ts-compile supports: feature checks, never version strings.

Each check asks torch whether the API is there, and each helper keeps the same behaviour either
way, or does without the API altogether where that is as short (`innermost_backend`).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import torch

# torch.compile(..., isolate_recompiles=True) (torch 2.13): a compile call with a cache and
# recompile budget of its own, instead of the ones the module's forward shares with every other
# compiled copy of it.
HAS_ISOLATE_RECOMPILES = "isolate_recompiles" in inspect.signature(torch.compile).parameters


def _signature_texts(params: list[inspect.Parameter]) -> tuple[str, str]:
    """(parameter list, call arguments) that pass `params` on unchanged; defaults read `_defaults`."""
    header, call = ["self"], []
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not has_var_positional and "*" not in header:
            header.append("*")
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        default = "" if p.default is p.empty else f"=_defaults[{p.name!r}]"
        header.append(star + p.name + default)
        call.append(f"{p.name}={p.name}" if p.kind is p.KEYWORD_ONLY else star + p.name)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params)
                                            or params[i + 1].kind is not p.POSITIONAL_ONLY):
            header.append("/")
    return ", ".join(header), ", ".join(call)


def _fresh_caller(module: torch.nn.Module):
    """`module(...)` from a function made for this call alone, with the signature of its forward.

    Dynamo keeps its cache entries, and counts the recompile budget, per code object: a new one
    gives this compile its own, as `isolate_recompiles` does. The forward's parameter names (and
    `self`) keep Dynamo's sources (L['timestep'], L['self']...) what they are when the module
    itself is compiled; its defaults are the forward's own. Calling the module, not its forward,
    runs its hooks and diffusers' wrappers as a compile of the module does.
    """
    params = list(inspect.signature(module.forward).parameters.values())
    header, call = _signature_texts(params)
    # __name__: the function belongs to this module, so inspect finds its source file and Dynamo
    # compiles its frame (a function with no source file is wrapped in Dynamo's shared code).
    namespace = {"__name__": __name__,
                 "_defaults": {p.name: p.default for p in params if p.default is not p.empty}}
    source = f"def forward({header}):\n    return self({call})\n"
    exec(compile(source, f"<ts_compile: caller of {type(module).__qualname__}>", "exec"), namespace)
    return types.MethodType(namespace["forward"], module)


def compile_isolated(module: torch.nn.Module, **compile_kwargs: Any):
    """`torch.compile(module, **compile_kwargs)` that neither uses up nor is refused by the
    recompile budget of the module's forward (several compiled copies of one model, `explain`).

    On torch without `isolate_recompiles` the result is a compiled function, not a module: call
    it, and pass it to `ts_compile.reset`/`stats` as usual.
    """
    if HAS_ISOLATE_RECOMPILES:
        return torch.compile(module, isolate_recompiles=True, **compile_kwargs)
    return torch.compile(_fresh_caller(module), **compile_kwargs)


def dict_version_reader() -> Callable[[dict], int] | None:
    """torch's reader of CPython's dict version tag (`torch._C._dynamo.guards.dict_version`,
    what Dynamo's dict guards read), if it works here: a tag that changes on every write to a
    dict (PEP 509). None where torch has no such reader, or where the tag does not change (a
    Python without it): `module_guards` then compares the dicts' keys and values' ids."""
    try:
        from torch._C._dynamo.guards import dict_version
    except ImportError:
        return None
    probe: dict[str, object] = {}
    seen = [dict_version(probe)]
    for edit in (lambda: probe.__setitem__("k", object()), lambda: probe.__setitem__("k", object()),
                 lambda: probe.pop("k")):
        edit()
        seen.append(dict_version(probe))
    return dict_version if len(set(seen)) == len(seen) else None


DICT_VERSION = dict_version_reader()


def tensor_layout_checker() -> Callable[[list[torch.Tensor]], Callable[..., bool]] | None:
    """torch's C++ check of tensors' layouts (`torch._C._dynamo.guards.TensorGuards`, what
    Dynamo's tensor guards are made of), if it behaves here as `module_guards` needs: made from
    a list of distinct tensors, its `check(*tensors)` is True while each still has its type,
    dtype, device, shape, strides and requires_grad (and dispatch keys, which include the
    thread's dispatch state), and False after a change. One C++ call instead of four Python
    reads per tensor. None where it is missing or fails the probe: the layouts are then read
    in Python."""
    try:
        from torch._C._dynamo.guards import TensorGuards
    except ImportError:
        return None

    def make(tensors: list[torch.Tensor]) -> Callable[..., bool]:
        sizes = [list(t.shape) for t in tensors]
        strides = [list(t.stride()) for t in tensors]
        return TensorGuards(*tensors, dynamic_dims_sizes=sizes, dynamic_dims_strides=strides).check

    try:
        a, b = torch.nn.Parameter(torch.zeros(2, 3)), torch.zeros(4)
        check = make([a, b])
        same = check(a, b)
        a.data = torch.zeros(3, 2).t()  # the same Parameter, its layout swapped under it
        changed = [check(a, b), check(a, b.double()), check(a, torch.zeros(5)),
                   check(a, torch.nn.Parameter(torch.zeros(4)))]
    except Exception:  # noqa: BLE001 - any failure means: read the layouts in Python
        return None
    return make if same is True and not any(changed) else None


TENSOR_LAYOUT_CHECK = tensor_layout_checker()


def innermost_backend(callback: Any) -> Any:
    """The backend function inside Dynamo's callback wrappers (torch 2.13 has this helper as
    `torch._dynamo.eval_frame.innermost_backend`; 2.10 does not, so follow the chain here)."""
    while hasattr(callback, "_torchdynamo_orig_backend"):
        callback = callback._torchdynamo_orig_backend
    return callback


def source_name(source: Any) -> str:
    """The name of a Dynamo `Source` (e.g. "L['timestep']"): a property since torch 2.10, a
    method in 2.9."""
    name = source.name
    return name() if callable(name) else name
