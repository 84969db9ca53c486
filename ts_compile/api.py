"""User-facing functions: `reset`, `stats`, `explain`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch

from ._compat import compile_isolated, innermost_backend
from .backend import CONTROLLER_ATTR
from .options import TaylorSeerOptions
from .passes import NotApplicable, build_graphs, declared_block_lists
from .runtime import Controller


def _callback_of(compiled: Any):
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(compiled, OptimizedModule):
        return compiled.dynamo_ctx.callback
    fn = compiled
    if isinstance(compiled, torch.nn.Module):  # model.compile(...) compiles in place
        fn = getattr(compiled, "_compiled_call_impl", None)
    if fn is None or not hasattr(fn, "_torchdynamo_orig_callable"):
        return None
    return inspect.getclosurevars(fn).nonlocals.get("callback")


def controller_of(compiled: Any) -> Controller | None:
    """The controller of a model compiled with backend="taylorseer" (None before its first call)."""
    from .deploy import ExportedTaylorSeer

    if isinstance(compiled, ExportedTaylorSeer):
        return compiled.controller
    callback = _callback_of(compiled)
    if callback is None:
        raise TypeError(
            f"ts_compile: expected what torch.compile(..., backend='taylorseer') returned, got "
            f"{type(compiled).__name__}; pass the compiled object, not the original model.")
    wrapper = innermost_backend(callback)
    return getattr(wrapper, CONTROLLER_ATTR, None)


def reset(compiled: Any) -> None:
    """Start a new generation: the next call is step 0 and forecasts nothing from before."""
    controller = controller_of(compiled)
    if controller is not None:
        controller.reset()


def stats(compiled: Any) -> dict[str, Any]:
    """Regions found, steps computed and forecast, bytes of Taylor state, recompiles, fallbacks."""
    controller = controller_of(compiled)
    if controller is None:
        return Controller(TaylorSeerOptions()).stats()
    return controller.stats()


@dataclasses.dataclass
class Explanation:
    """What the pass would do with a model, found without running a generation."""

    regions: list[str]
    skipped: list[tuple[str, str]]
    live_outputs: list[tuple[str, int, tuple, torch.dtype]]  # region, output index, shape, dtype
    state_bytes: int
    reason_not_applied: str | None
    guarded_graph: str

    def __str__(self) -> str:
        lines = []
        if self.reason_not_applied:
            lines.append(f"TaylorSeer does not apply: {self.reason_not_applied}")
        lines.append(f"regions ({len(self.regions)}): {', '.join(self.regions) or '-'}")
        for name, why in self.skipped:
            lines.append(f"  skipped {name}: {why}")
        lines.append(f"live outputs carrying state ({len(self.live_outputs)}):")
        for region, index, shape, dtype in self.live_outputs:
            lines.append(f"  {region}[{index}]  shape={list(shape)}  dtype={dtype}")
        lines.append(f"Taylor state: {self.state_bytes / 2**20:.3f} MiB")
        if self.guarded_graph:
            lines.append("(print(explanation.guarded_graph) shows the graph with one torch.cond "
                         "per region)")
        return "\n".join(lines)


def explain(model: torch.nn.Module, *args: Any, options: dict[str, Any] | None = None,
            **kwargs: Any) -> list[Explanation]:
    """Trace `model(*args, **kwargs)` once and report what the pass finds, one entry per graph."""
    settings = TaylorSeerOptions.coerce(options)
    found: list[Explanation] = []

    def capture(gm, example_inputs, **_):
        try:
            graphs = build_graphs(gm, settings, declared_block_lists(model))
        except NotApplicable as err:
            found.append(Explanation([], [], [], 0, str(err), ""))
            return gm
        itemsize = torch.empty((), dtype=settings.torch_state_dtype).element_size()
        live = [(t.region, t.output_index, t.shape, t.dtype) for t in graphs.guards.tables]
        nbytes = sum((settings.order + 1) * _numel(t.shape) * itemsize for t in graphs.guards.tables)
        found.append(Explanation([r.name for r in graphs.regions], graphs.skipped, live, nbytes,
                                 None, graphs.guarded.print_readable(print_output=False)))
        return gm

    # Isolated: explain must neither use up nor be refused by the recompile budget that the
    # model's forward shares with the user's own compiled copies.
    with torch.no_grad():
        compile_isolated(model, backend=capture, dynamic=False)(*args, **kwargs)
    if not found:
        raise RuntimeError(
            "ts_compile.explain: Dynamo handed over no graph (the model ran uncompiled, e.g. "
            "its recompile limit was reached); see TORCH_LOGS=recompiles, or call "
            "torch._dynamo.reset() first.")
    return found


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
