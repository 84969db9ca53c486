"""diffusers' cache protocol, so a compiled transformer works inside an unmodified pipeline.

Pipelines announce each denoiser call with `transformer.cache_context("cond"|"uncond",
step_index=..., num_inference_steps=...)` and, at the end of `__call__`, reset stateful hooks
through `_reset_stateful_cache()`. Both walk the model's `HookRegistry` for stateful hooks, so the
controller joins that registry as one: `set_context` selects the Taylor state for the call name
(and takes the step index and count when given); `reset_state` starts a new generation.

The hook is put in the registry *without* `register_hook`, which would wrap `forward` and make
Dynamo recompile the model on its next call; this hook has no forward behaviour to add. Since it
joins during the first compile, which already runs inside a `cache_context`, that context is read
once from the suspended `cache_context` generator (`_open_cache_context`).
"""

from __future__ import annotations

import functools
import gc
import inspect
import types
import weakref
from typing import Any

import torch

HOOK_NAME = "ts_compile_taylorseer"


class ControllerSet(weakref.WeakSet):
    """The controllers of the compiled versions of one module. A deep copy of the module is not
    compiled, so its copy starts empty (controllers hold traced graphs, which cannot be copied)."""

    def __deepcopy__(self, memo) -> "ControllerSet":
        return ControllerSet()


@functools.cache
def _hook_classes():
    from diffusers.hooks.hooks import HookFunctionReference, ModelHook, StateManager

    class ContextRelay(StateManager):
        """What `_set_cache_context` finds on a stateful hook; forwards the context."""

        def __init__(self, hook: Any) -> None:
            super().__init__(state_cls=None)
            self._hook = hook

        def set_context(self, context) -> None:
            super().set_context(context)
            for controller in list(self._hook.controllers):
                controller.set_context(context)

        def reset(self, *args, **kwargs) -> None:
            self._context = None

    class TaylorSeerContextHook(ModelHook):
        _is_stateful = True

        def __init__(self) -> None:
            super().__init__()
            self.controllers = ControllerSet()
            self.context_relay = ContextRelay(self)

        def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
            for controller in list(self.controllers):
                controller.reset()
            return module

    return HookFunctionReference, TaylorSeerContextHook


def _open_cache_context(module: torch.nn.Module):
    """The `CacheContext` of a `module.cache_context(...)` block being run now, if any."""
    from diffusers.hooks.hooks import CacheContext
    from diffusers.models.cache_utils import CacheMixin

    code = inspect.unwrap(CacheMixin.cache_context).__code__
    for obj in gc.get_objects():
        # `type(...) is`, not isinstance: isinstance reads `__class__`, which some objects
        # (deprecated torch.distributed aliases) answer with a warning.
        if (type(obj) is types.GeneratorType and obj.gi_code is code
                and obj.gi_frame is not None and obj.gi_frame.f_locals.get("self") is module):
            frame_locals = obj.gi_frame.f_locals
            return CacheContext(frame_locals["name"], **frame_locals.get("kwargs", {}))
    return None


def _attach_reset_only(module: torch.nn.Module, controller: Any) -> None:
    """Models without the cache protocol (e.g. DiT): pipelines still call
    `_reset_stateful_cache()` on components that have it, so give the instance one."""
    module.__dict__.setdefault("_ts_compile_controllers", ControllerSet()).add(controller)
    # A bound method, so that a deep copy of the module resets its own (empty) set.
    module.__dict__["_reset_stateful_cache"] = types.MethodType(_reset_controllers, module)


def _reset_controllers(module: torch.nn.Module, recurse: bool = True) -> None:
    for controller in list(module.__dict__.get("_ts_compile_controllers", ())):
        controller.reset()


def attach_to_diffusers_model(module: Any, controller: Any) -> bool:
    """Join `module`'s hook registry if it speaks diffusers' cache protocol; True if attached."""
    if not isinstance(module, torch.nn.Module) or not type(module).__module__.startswith("diffusers"):
        return False
    if not (hasattr(module, "cache_context") and hasattr(module, "_reset_stateful_cache")):
        _attach_reset_only(module, controller)
        return True
    try:
        from diffusers.hooks.hooks import HookRegistry
    except ImportError:
        return False
    registry = HookRegistry.check_if_exists_or_initialize(module)
    hook = registry.get_hook(HOOK_NAME)
    if hook is None:
        function_reference_cls, hook_cls = _hook_classes()
        hook = hook_cls()
        # What `register_hook` records, minus the forward wrapping (see the module docstring):
        # `remove_hook` then restores `forward` to what it is now.
        reference = function_reference_cls()
        reference.forward = module.forward
        hook.fn_ref = reference
        registry.hooks[HOOK_NAME] = hook
        registry._hook_order.append(HOOK_NAME)
        registry._fn_refs.append(reference)
    if controller not in hook.controllers:
        hook.controllers.add(controller)
        controller.set_context(_open_cache_context(module))
    return True
