"""The `taylorseer` Dynamo backend.

Registered through the `torch_dynamo_backends` entry point (pyproject.toml); this module must not
also call `register_backend` (Dynamo asserts on duplicate names).

    graph from Dynamo -> passes.build_graphs -> compute graph, forecast graph
                      -> compiled by the chosen compiler -> GraphRuntime (host dispatch)

When the rewrite cannot apply (grad enabled, no blocks, an unsupported region structure) the
backend warns once and returns a correct plain compile of the same graph.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from ._compat import source_name
from .integrations import attach_to_diffusers_model
from .options import OptionError, TaylorSeerOptions
from .passes import NotApplicable, build_graphs, declared_block_lists
from .runtime import Controller, GraphRuntime
from .state import TableShapes, TaylorState

log = logging.getLogger(__name__)

CONTROLLER_ATTR = "_ts_compile_controller"


def _compile_wrapper_frame_owner() -> Any | None:
    """The `_TorchCompileWrapper` of the `torch.compile` call being compiled, if any.

    Each `torch.compile(...)` creates one; keeping the controller on it gives each compiled model
    (even two compiled copies of one module) its own state, shared by all of its graphs.
    """
    wrapper_code = torch._TorchCompileWrapper.__call__.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is wrapper_code:
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None


class _OwnOptions(dict):
    """The options of one `torch.compile` call, equal only to themselves.

    Dynamo lets a compiled model reuse another's cached graphs when their backends compare equal,
    and `_TorchCompileWrapper.__eq__` compares the options dicts by value: two compiled copies of
    one module would then share graphs, and with them Taylor state. Identity equality stops that.
    """

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = None  # type: ignore[assignment]


def controller_for_current_compile(options: TaylorSeerOptions) -> Controller:
    owner = _compile_wrapper_frame_owner()
    controller = getattr(owner, CONTROLLER_ATTR, None)
    if controller is None:
        controller = Controller(options)
        if owner is not None:
            setattr(owner, CONTROLLER_ATTR, controller)
            owner.kwargs["options"] = _OwnOptions(owner.kwargs.get("options") or {})
    return controller


def _module_being_compiled() -> torch.nn.Module | None:
    """The module whose forward Dynamo is tracing (None for plain functions)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        frame_locals = InstructionTranslator.current_tx().output.root_tx.f_locals
    except Exception:  # not inside a Dynamo trace (e.g. called directly in a test)
        return None
    for name in ("self", "fn"):
        if isinstance(frame_locals.get(name), torch.nn.Module):
            return frame_locals[name]
    return None


def _device_of(example_inputs: Sequence[Any]) -> torch.device:
    for value in example_inputs:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def time_input_index(graphs, example_inputs: Sequence[Any], options: TaylorSeerOptions) -> int | None:
    """Position, among the graph's inputs, of the argument that carries the sampler time."""
    if options.time == "step":
        return None
    name = options.time_input
    # Dynamo's sources read L['timestep'], or L['kwargs']['timestep'] under diffusers' wrappers.
    pattern = re.compile(r"\[['\"]" + re.escape(name) + r"['\"]\]$")
    placeholders = list(graphs.guarded.graph.find_nodes(op="placeholder"))
    names = []
    for index, node in enumerate(placeholders[:graphs.guards.num_user_inputs]):
        source = getattr(node, "_dynamo_source", None)
        label = source_name(source) if source is not None else node.name
        names.append(label)
        if pattern.search(label) and isinstance(example_inputs[index], torch.Tensor):
            return index
    raise OptionError(
        f"ts_compile: option time={options.time!r} reads the forward argument "
        f"{name!r}, but no tensor input of that name reaches the graph (inputs: "
        f"{', '.join(n for n in names if 'parameters' not in n) or 'none'}); pass the time "
        "as a tensor, set time_input to the argument's name, or use time='step'.")


def compile_graph(gm: fx.GraphModule, example_inputs: Sequence[Any],
                  options: TaylorSeerOptions) -> Callable:
    """Lower one graph with the chosen compiler; the result is called as `fn(*args)`."""
    compiler = options.compiler
    if compiler == "eager":
        return gm
    if compiler == "inductor":
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, list(example_inputs), config_patches=options.inductor_patches())
    if isinstance(compiler, str):  # another registered Dynamo backend (validated in options)
        from torch._dynamo.backends.registry import lookup_backend

        compiler = lookup_backend(compiler)
    from torch._dynamo.backends.common import AotAutograd, aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    if isinstance(compiler, AotAutograd):  # functionalises the graph itself (aot_eager, ...)
        return compiler(gm, list(example_inputs))
    # The compute graph writes the Taylor tables in place (copy_ into its inputs). Functionalised
    # by AOTAutograd, those writes become outputs that AOTAutograd applies itself, so a compiler
    # that drops input mutations (OpenVINO's default path does) cannot lose the state.

    def boxed(graph: fx.GraphModule, inputs: list) -> Callable:
        fn = compiler(graph, inputs)  # a Dynamo backend's result is called as fn(*args)
        return fn if getattr(fn, "_boxed_call", False) else make_boxed_func(fn)

    return aot_autograd(fw_compiler=boxed)(gm, list(example_inputs))


def _plain(gm: fx.GraphModule, example_inputs, options, controller, reason: str) -> Callable:
    controller.warn_once(f"{reason}; compiling without TaylorSeer (every step computes).")
    controller.fallbacks.append(reason)
    return compile_graph(gm, example_inputs, options)


def taylorseer(gm: fx.GraphModule, example_inputs: Sequence[Any], *, mode: str | None = None,
               options: dict[str, Any] | None = None, **unknown: Any) -> Callable:
    """Dynamo backend: `torch.compile(model, backend="taylorseer", options={...})`."""
    if unknown:
        raise TypeError(f"ts_compile: unexpected backend arguments {sorted(unknown)}")
    settings = TaylorSeerOptions.from_compile_kwargs(mode, options)
    controller = controller_for_current_compile(settings)
    compile_id = gm.meta.get("dynamo_compile_id")
    controller.record_compile(getattr(compile_id, "frame_id", None))

    if torch.is_grad_enabled():
        return _plain(gm, example_inputs, settings, controller,
                      "grad is enabled (TaylorSeer is for inference: wrap the loop in "
                      "torch.no_grad() or torch.inference_mode())")
    module = _module_being_compiled()
    try:
        graphs = build_graphs(gm, settings, declared_block_lists(module))
    except NotApplicable as err:
        return _plain(gm, example_inputs, settings, controller, f"cannot apply: {err}")

    time_index = time_input_index(graphs, example_inputs, settings)  # fails before compiling
    device = _device_of(example_inputs)
    shapes = TableShapes.of(graphs)
    example = TaylorState(shapes.resolve(shapes.key(tuple(example_inputs))), settings.order,
                          settings.torch_state_dtype, device)
    inputs = [*example_inputs, *example.tables, example.scalars]
    compute_fn = compile_graph(graphs.compute, inputs, settings)
    forecast_fn = compile_graph(graphs.forecast, inputs, settings)
    log.info("taylorseer: %d regions, %d live outputs", len(graphs.regions), len(example.tables))
    attach_to_diffusers_model(module, controller)
    return GraphRuntime.for_graphs(controller, graphs, compute_fn, forecast_fn, device,
                                   time_index=time_index)
