"""Which `torch.compile(...)` call a model call runs under, and where each model call begins and
ends.

Dynamo runs every call of a compiled model inside `compile_wrapper`, a closure of the
`_TorchDynamoContext` that `torch.compile(...)` made (its `self`); `innermost_backend(ctx.callback)`
is the `_TorchCompileWrapper` holding the call's backend. The per-compile state (a `Controller`)
belongs to a `backend.TaylorSeerBackend`, one per `torch.compile` call: the object passed as
`backend=`, or, for `backend="taylorseer"`, one made from the call's options and kept on its
wrapper (`_backend_of`). A hook in the context's `enter_exit_hooks` (run by `compile_wrapper`
before the call and, in its `finally`, after it) marks each model call:

- begin: the calling thread's `Lane` of that controller becomes the current one. The graphs read
  it, because compiled copies of one module class share graphs (their backends compare equal, so
  Dynamo reuses one compile and the recompile limit is not spent per copy) but not state;
- end: an exception on its way out (raised in a graph, in Dynamo while it retraces, in a guard)
  resets the generation, so that the next call is not taken for the next step.

A copy whose first call runs a graph another copy compiled is found by that graph
(`controller_of_running_call`, a walk up the stack); the hook marks its later calls.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

import torch

from ._compat import innermost_backend
from .runtime import Controller

BACKEND_ATTR = "_ts_compile_backend"  # the string form's backend object, on torch's wrapper
BACKEND_NAME = "taylorseer"
_STACK_DEPTH = 48  # from a graph to its compile_wrapper: a few frames (more with graph breaks)


@functools.cache
def _compile_wrapper_code():
    """The code of Dynamo's per-call wrapper (None if this torch has none by that name)."""
    from torch._dynamo.eval_frame import _TorchDynamoContext

    for const in _TorchDynamoContext.__call__.__code__.co_consts:
        if inspect.iscode(const) and const.co_name == "compile_wrapper":
            return const
    return None


def _running_context(depth: int | None) -> tuple[Any, Any, Any] | None:
    """(Dynamo context, wrapped callable, its call's cleanup list) of the innermost compiled call
    running in this thread."""
    code = _compile_wrapper_code()
    frame = sys._getframe(2)
    while frame is not None and code is not None and depth != 0:
        if frame.f_code is code:
            frame_locals = frame.f_locals
            return frame_locals.get("self"), frame_locals.get("fn"), frame_locals.get("cleanups")
        frame = frame.f_back
        depth = None if depth is None else depth - 1
    return None


def _join_running_call(controller: Controller, cleanups: Any) -> None:
    """Mark the call running now as well: its boundary hook was not installed when it began
    (the copy's first call), so begin it here and end it with the call's own cleanups, which
    `compile_wrapper` runs in its `finally`. Without this a model whose graph breaks give it
    several graphs would place each of them as a step of its own on its first call."""
    lane = controller.lane()
    if not lane.in_call and isinstance(cleanups, list):
        cleanups.append(lane.begin_call())


def _backend_of(ctx: Any) -> tuple[Any, Any] | None:
    """(the `torch.compile` call, its `TaylorSeerBackend`) behind a Dynamo context, if the backend
    is this one; the call is named by torch's wrapper of it (or by the backend itself when Dynamo
    was handed the object without one)."""
    from .backend import TaylorSeerBackend

    callback = getattr(ctx, "callback", None)
    if not callable(callback):
        return None
    wrapper = innermost_backend(callback)
    if isinstance(wrapper, TaylorSeerBackend):
        return wrapper, wrapper
    if not isinstance(wrapper, torch._TorchCompileWrapper):
        return None
    if isinstance(wrapper.compiler_fn, TaylorSeerBackend):
        return wrapper, wrapper.compiler_fn
    if wrapper.compiler_name != BACKEND_NAME:
        return None
    backend = getattr(wrapper, BACKEND_ATTR, None)
    if backend is None:  # backend="taylorseer": one object per torch.compile call, from its options
        kwargs = wrapper.kwargs
        backend = TaylorSeerBackend(kwargs.get("options"), mode=kwargs.get("mode"))
        setattr(wrapper, BACKEND_ATTR, backend)
    return wrapper, backend


def controller_of_context(ctx: Any) -> Controller | None:
    """The controller of one `torch.compile` call, by its Dynamo context (None if the backend is
    not this one)."""
    found = _backend_of(ctx)
    return None if found is None else found[1].controller_for(found[0])


def mark_calls(ctx: Any, controller: Controller) -> None:
    """Hook the controller's call boundary into a Dynamo context (once)."""
    hooks = getattr(ctx, "enter_exit_hooks", None)
    if isinstance(hooks, list) and not any(getattr(h, "__self__", None) is controller
                                           for h in hooks):
        hooks.append(controller.enter_call)


def controller_of_running_call() -> Controller | None:
    """From inside a graph: the controller of the copy being called (its later calls marked).

    Also joins diffusers' cache protocol for that copy's module (the copy compiled nothing, so
    the backend never saw it)."""
    found = _running_context(_STACK_DEPTH)
    controller = None if found is None else controller_of_context(found[0])
    if controller is None:
        return None
    mark_calls(found[0], controller)
    _join_running_call(controller, found[2])
    from .integrations import attach_to_diffusers_model

    attach_to_diffusers_model(getattr(found[1], "__self__", None), controller)
    return controller


def model_of_running_call() -> torch.nn.Module | None:
    """The module `torch.compile` was applied to, for the compiled call running in this thread
    (None for a compiled function): the frame Dynamo compiles may belong to one of its
    submodules (a block's forward, after a graph break in the model's loop)."""
    found = _running_context(None)
    fn = None if found is None else found[1]
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return getattr(owner, "_orig_mod", owner)
    return None


def backend_for_current_compile() -> Any | None:
    """At compile time: the `TaylorSeerBackend` of the `torch.compile` call being compiled (the
    innermost compiled call running in this thread), or None."""
    found = _running_context(None)
    found = None if found is None else _backend_of(found[0])
    return None if found is None else found[1]


def controller_for_current_compile(backend: Any) -> Controller:
    """At compile time: `backend`'s controller for the `torch.compile` call being compiled, its
    calls marked from the next one on. Dynamo driven another way (no `torch.compile` call of
    this backend running): the backend's own controller."""
    found = _running_context(None)
    owner = None if found is None else _backend_of(found[0])
    if owner is None or owner[1] is not backend:
        return backend.controller
    controller = backend.controller_for(owner[0])
    mark_calls(found[0], controller)
    _join_running_call(controller, found[2])
    return controller


def _context_of(compiled: Any) -> Any | None:
    """The Dynamo context of what `torch.compile` returned (a module, `model.compile()`, or a
    function), or None."""
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(compiled, OptimizedModule):
        return compiled.dynamo_ctx
    fn = compiled
    if isinstance(compiled, torch.nn.Module):  # model.compile(...) compiles in place
        fn = getattr(compiled, "_compiled_call_impl", None)
    if fn is None or not hasattr(fn, "_torchdynamo_orig_callable"):
        return None
    return inspect.getclosurevars(fn).nonlocals.get("self")


def controller_of_compiled(compiled: Any) -> Controller | None:
    """The controller of a model compiled with backend="taylorseer" (made, and its calls marked,
    if the model has not run yet); None if `compiled` is not such a model."""
    ctx = _context_of(compiled)
    controller = None if ctx is None else controller_of_context(ctx)
    if controller is None:
        return None
    mark_calls(ctx, controller)
    return controller
