"""The `taylorseer` Dynamo backend.

Registered through the `torch_dynamo_backends` entry point (pyproject.toml); this module must not
also call `register_backend` (Dynamo asserts on duplicate names).

    graph from Dynamo -> passes.build_graphs -> compute graph, forecast graph
                      -> compiled by the chosen compiler -> GraphRuntime (host dispatch)

When the rewrite cannot apply (grad enabled, no blocks, an unsupported region structure) the
backend warns once and returns a correct plain compile of the same graph.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch._dynamo.exc import ShortenTraceback

from ._compat import source_name
from .calling import (StateLayout, clock_position, first_positions, positional_parameter_names,
                      time_position)
from .compile_calls import (backend_for_current_compile, controller_for_current_compile,
                            model_of_running_call)
from .integrations import attach_to_diffusers_model
from .module_guards import compiled_now
from .options import OptionError, TaylorSeerOptions
from .passes import NotApplicable, block_of, build_graphs, declared_block_lists
from .runtime import Controller, GraphRuntime
from .state import TableShapes, TaylorState

log = logging.getLogger(__name__)


class _PassThroughOptionError(OptionError, ShortenTraceback):
    """An `OptionError` raised while Dynamo compiles. Dynamo wraps a backend's exceptions in
    `BackendCompilerFailed` except `ShortenTraceback`s, which it re-raises as they are: so the
    user catches `ts_compile.OptionError` (or ValueError) from the compiled model's call."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.first_useful_frame = None  # what ShortenTraceback keeps (None: the whole traceback)

    def __str__(self) -> str:
        return self.message  # without the notes Dynamo appends to the arguments


_PassThroughOptionError.__name__ = _PassThroughOptionError.__qualname__ = "OptionError"


def _root_frame() -> Any | None:
    """The frame Dynamo is tracing from (None outside a trace, e.g. called directly in a test)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        return InstructionTranslator.current_tx().output.root_tx
    except Exception:
        return None


def _module_being_compiled() -> torch.nn.Module | None:
    """The module whose forward Dynamo is tracing (None for plain functions)."""
    root = _root_frame()
    frame_locals = {} if root is None else root.f_locals
    for name in ("self", "fn"):
        if isinstance(frame_locals.get(name), torch.nn.Module):
            return frame_locals[name]
    return None


def _forward_arguments() -> tuple[list[str], str | None]:
    """(the traced forward's positional argument names, `self` left out; the name of the
    `*args` they arrive in, if a wrapper's). ([], None) for a resume function after a graph
    break, whose arguments are intermediate values.

    A frame that names none (a `(self, *args, **kwargs)` wrapper: diffusers' `apply_lora_scale`
    wraps the forward of FLUX, SD3, Wan and 45 other transformers) gives those of the forward
    it wraps (`inspect.signature` follows `functools.wraps`)."""
    root = _root_frame()
    if root is None or root.f_code.co_name.startswith("torch_dynamo_resume_in_"):
        return [], None
    code = root.f_code
    names = [n for n in code.co_varnames[:code.co_argcount] if n != "self"]
    owner = root.f_locals.get("self")
    if names or not isinstance(owner, torch.nn.Module):
        return names, None
    varargs = (code.co_varnames[code.co_argcount + code.co_kwonlyargcount]
               if code.co_flags & inspect.CO_VARARGS else None)
    return positional_parameter_names(owner.forward), varargs


def _block_stack_of_frame(model: torch.nn.Module | None, module: torch.nn.Module | None
                          ) -> tuple[frozenset[str], tuple[str, str] | None]:
    """(block lists, whole-graph region) for the frame being compiled.

    Usually the frame is the compiled model's forward: its declared block lists. After a graph
    break in the model's loop Dynamo compiles the frames of the modules it calls on their own;
    a frame of a block (or of a part of one) is then a region as a whole, and a frame outside
    the declared stack has none.
    """
    if module is None or model is None or module is model:
        return declared_block_lists(model), None
    block_lists = declared_block_lists(model)
    if not block_lists:  # the model declares nothing: the frame's own structure decides
        return declared_block_lists(module), None
    where = block_of(model, module, block_lists)
    if where is None:
        raise NotApplicable(f"a graph of {type(module).__name__}, outside the model's block "
                            f"stack ({', '.join(sorted(block_lists))})")
    return block_lists, (where, type(module).__name__)


def _parameter_input_index(graphs) -> int | None:
    """A parameter (or buffer) among the graph's inputs: its identity names the module."""
    for index, label in enumerate(_input_labels(graphs)):
        if "_parameters[" in label or "_buffers[" in label:
            return index
    return None


def _device_of(example_inputs: Sequence[Any]) -> torch.device:
    for value in example_inputs:
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def _input_labels(graphs) -> list[str]:
    """Dynamo's source of each user input: L['x'], or L['kwargs']['x'] under wrappers."""
    placeholders = list(graphs.guarded.graph.find_nodes(op="placeholder"))
    labels = []
    for node in placeholders[:graphs.guards.num_user_inputs]:
        source = getattr(node, "_dynamo_source", None)
        labels.append(source_name(source) if source is not None else node.name)
    return labels


_ARGUMENT_NAME = re.compile(r"\[['\"]([^'\"]+)['\"]\]$")  # L['x'], L['kwargs']['x'] -> x
_INDEXED_LOCAL = re.compile(r"^L\[['\"]([^'\"]+)['\"]\]\[(\d+)\]$")  # L['args'][0]


def tensor_input_positions(graphs, example_inputs: Sequence[Any],
                           argument_names: Sequence[str] = (),
                           varargs: str | None = None) -> dict[str, int]:
    """Argument name -> position among the graph's inputs, for the tensors Dynamo's sources
    name (parameters and buffers are no arguments). `argument_names`, `varargs`: the forward's
    names, and the `*args` of a wrapper that received them by position (`_forward_arguments`)."""
    named = []
    for index, label in enumerate(_input_labels(graphs)):
        if not isinstance(example_inputs[index], torch.Tensor):
            continue
        found = _ARGUMENT_NAME.search(label)
        if found and "_parameters[" not in label and "_buffers[" not in label:
            named.append((found.group(1), index))
            continue
        found = _INDEXED_LOCAL.match(label)
        if found and found.group(1) == varargs and int(found.group(2)) < len(argument_names):
            named.append((argument_names[int(found.group(2))], index))
    return first_positions(named)


def compile_graph(gm: fx.GraphModule, example_inputs: Sequence[Any],
                  options: TaylorSeerOptions, input_checks: bool = True) -> Callable:
    """Lower one graph with the chosen compiler; the result is called as `fn(*args)`.

    `input_checks=False` (the forecast graph): no Inductor size/stride asserts on the inputs
    unless the options ask for them. Every input is checked already: the user's by Dynamo's
    guards, the parameters by Dynamo's guards (or `skip_module_guards`' per-generation check),
    the tables and scalars are the runtime's own. ~10 us of a forecast step at small sizes."""
    compiler = options.compiler
    if compiler == "eager":
        return gm
    if compiler == "inductor":
        from torch._inductor.compile_fx import compile_fx

        patches = options.inductor_patches()
        if not input_checks:
            patches.setdefault("size_asserts", False)
        return compile_fx(gm, list(example_inputs), config_patches=patches)
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
    compiled_now(None, None)
    return compile_graph(gm, example_inputs, options)


class TaylorSeerBackend:
    """The backend as an object, its canonical form:

        torch.compile(model, backend=ts_compile.TaylorSeerBackend(interval=5, order=2))

    The options are checked here, before anything compiles. The object holds the `Controller`
    (Taylor states, counters, fallbacks) of the one `torch.compile` call it is passed to; a second
    call with the same object is refused when it is found out (one controller cannot keep two
    models' generations apart). `backend="taylorseer"` is a thin adapter over it (`taylorseer`
    below): one object per `torch.compile` call, made from that call's options. Objects with equal
    options compare equal, so that compiled copies of one module class share Dynamo's graphs and
    its recompile budget, as the string form's equal options do (see docs/design.md §12).
    """

    def __init__(self, options: TaylorSeerOptions | Mapping[str, Any] | None = None, /, *,
                 mode: str | None = None, **fields: Any) -> None:
        if isinstance(options, TaylorSeerOptions):
            self.options = dataclasses.replace(options, **fields)  # (mode is in the options)
        else:
            if fields and (options is None or isinstance(options, Mapping)):
                options = {**(options or {}), **fields}
            self.options = TaylorSeerOptions.from_compile_kwargs(mode, options)
        self.controller = Controller(self.options)
        self._owner: weakref.ref | None = None  # the torch.compile call served (torch's wrapper)

    def controller_for(self, owner: Any) -> Controller:
        """The controller, for the `torch.compile` call `owner` (compile_calls.py)."""
        served = None if self._owner is None else self._owner()
        if served is None:
            self._owner = weakref.ref(owner)
        elif served is not owner:
            raise OptionError(
                "ts_compile: one TaylorSeerBackend was passed to two torch.compile calls; its "
                "Taylor state and stats belong to one compiled model. Make one per call: "
                "torch.compile(model, backend=ts_compile.TaylorSeerBackend(...)).")
        return self.controller

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any], *,
                 mode: str | None = None, options: Any = None) -> Callable:
        if mode is not None or options is not None:  # torch.compile(..., options=...) beside it
            raise _PassThroughOptionError(
                "ts_compile: a TaylorSeerBackend carries its own options: pass them to "
                "TaylorSeerBackend(...), not to torch.compile(mode=..., options=...).")
        try:
            return _compile(gm, example_inputs, self)
        except _PassThroughOptionError:
            raise
        except OptionError as err:
            raise _PassThroughOptionError(str(err)) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaylorSeerBackend) and other.options == self.options

    def __hash__(self) -> int:
        return hash(repr(self.options))

    def __repr__(self) -> str:
        return f"TaylorSeerBackend({self.options!r})"


def taylorseer(gm: fx.GraphModule, example_inputs: Sequence[Any], *, mode: str | None = None,
               options: dict[str, Any] | None = None, **unknown: Any) -> Callable:
    """Dynamo backend: `torch.compile(model, backend="taylorseer", options={...})`, the adapter to
    the `TaylorSeerBackend` of this `torch.compile` call (made from its options at its first use)."""
    if unknown:
        raise TypeError(f"ts_compile: unexpected backend arguments {sorted(unknown)}")
    try:
        backend = backend_for_current_compile()
        if backend is None:  # Dynamo driven another way: a private controller per graph
            backend = TaylorSeerBackend(options, mode=mode)
    except OptionError as err:
        raise _PassThroughOptionError(str(err)) from None
    return backend(gm, example_inputs)


def _compile(gm: fx.GraphModule, example_inputs: Sequence[Any],
             backend: TaylorSeerBackend) -> Callable:
    settings = backend.options
    controller = controller_for_current_compile(backend)
    compile_id = gm.meta.get("dynamo_compile_id")
    controller.record_compile(getattr(compile_id, "frame_id", None))

    if torch.is_grad_enabled():
        return _plain(gm, example_inputs, settings, controller,
                      "grad is enabled (TaylorSeer is for inference: wrap the loop in "
                      "torch.no_grad() or torch.inference_mode())")
    own = _module_being_compiled()
    model = model_of_running_call() or own
    # A frame with no module of its own (a hook's wrapper around the forward, as diffusers'
    # context-parallel hooks add) is the model's call, not one block's.
    module = own or model
    try:
        block_lists, whole = _block_stack_of_frame(model, module)
        graphs = build_graphs(gm, settings, block_lists, whole)
    except NotApplicable as err:
        return _plain(gm, example_inputs, settings, controller, f"cannot apply: {err}")

    argument_names, varargs = _forward_arguments()
    positions = tensor_input_positions(graphs, example_inputs, argument_names, varargs)
    labels = [label for label in _input_labels(graphs) if "parameters" not in label]
    time_index = time_position(positions, settings, inputs=labels)  # fails before compiling
    clock_index = clock_position(positions, settings)
    device = _device_of(example_inputs)
    shapes = TableShapes.of(graphs)
    layout = StateLayout.of(graphs.guards.tables, settings)
    example = TaylorState(layout, shapes.resolve(shapes.key(tuple(example_inputs))), device)
    inputs = list(layout.graph_inputs(example_inputs, example))
    compute_fn = compile_graph(graphs.compute, inputs, settings)
    forecast_fn = compile_graph(graphs.forecast, inputs, settings, input_checks=False)
    log.info("taylorseer: %d regions, %d live outputs", len(graphs.regions), len(layout.tables))
    attach_to_diffusers_model(module, controller)
    runtime = GraphRuntime.for_graphs(
        controller, graphs, compute_fn, forecast_fn, device, time_index=time_index,
        latent_index=positions.get(next(iter(argument_names), None)),  # the first: the latent
        clock_index=clock_index,
        clock_device=None if clock_index is None else example_inputs[clock_index].device,
        instance_index=None if module is model else _parameter_input_index(graphs))
    compiled_now(runtime, model)  # for module_guards.skip_module_guards, if the user passed it
    return runtime
