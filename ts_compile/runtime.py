"""Host-side dispatch: per call, pick the compute or the forecast graph and feed it its state.

`Controller`: one per `torch.compile(...)` call (one compiled model). Holds the options, the call
context (diffusers' "cond"/"uncond"), an explicit step index when a pipeline gives one, the
warnings already given and the counters `ts_compile.stats` reports.

`GraphRuntime`: one per graph Dynamo hands the backend. Owns the two compiled graphs and one
`TaylorState` per context; its `__call__` is the hot path: a few integer comparisons, one small
host->device copy of the step's scalars, one call. No device->host sync.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .distributed import collective_stats
from .options import TaylorSeerOptions
from .passes import TableSpec, TaylorSeerGraphs
from .schedule import is_computed_step
from .state import TableShapes, TaylorState
from .taylor import (apply_device_time, compute_step_scalars, forecast_step_scalars,
                     sigmas_from_alphas_cumprod, time_value)

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = "default"


class Controller:
    """Everything the graphs of one compiled model share."""

    def __init__(self, options: TaylorSeerOptions) -> None:
        self.options = options
        self.runtimes: list[GraphRuntime] = []
        self.context = DEFAULT_CONTEXT
        self.step_index: int | None = None  # given by a pipeline (cache_context); else counted
        self.num_steps: int | None = None  # given by a pipeline; else options.num_steps
        self.fallbacks: list[str] = []  # why a graph got a plain compile
        # Per context, the state its last call used: when Dynamo sends the context to another
        # graph (a recompile mid-generation), that graph continues this state if it can.
        self.latest_states: dict[str, TaylorState] = {}
        self.compiled_frames: dict[int, int] = {}  # Dynamo frame id -> graphs compiled for it
        self._warned: set[str] = set()
        self.interrupted = 0  # generations cut short by an exception inside a call

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"ts_compile: {message}", stacklevel=3)

    def record_compile(self, frame_id: int | None) -> None:
        if frame_id is not None:
            self.compiled_frames[frame_id] = self.compiled_frames.get(frame_id, 0) + 1

    def reset(self) -> None:
        """Start a new generation: every graph's state, in every context, forgets its history."""
        for runtime in self.runtimes:
            runtime.reset()
        self.step_index = None

    def set_context(self, context: Any | None) -> None:
        """Take a pipeline's call context (diffusers `CacheContext`, or None when it ends)."""
        if context is None:
            self.context, self.step_index = DEFAULT_CONTEXT, None
            return
        self.context = context.name
        self.step_index = getattr(context, "step_index", None)
        self.num_steps = getattr(context, "num_inference_steps", None) or self.num_steps

    def stats(self) -> dict[str, Any]:
        """Counters over all graphs; regions and tables shared by recompiled graphs count once."""
        states = {id(st): st for r in self.runtimes for st in r.states.values()}
        nonfinite = [st.nonfinite_counts() for st in states.values()]  # one read per state
        return {
            "graphs": len(self.runtimes),
            "regions": list(dict.fromkeys(n for r in self.runtimes for n in r.region_names)),
            "skipped_regions": list(dict.fromkeys(s for r in self.runtimes for s in r.skipped)),
            "live_outputs": len({(t.region, t.output_index)
                                 for r in self.runtimes for t in r.table_specs}),
            "computed_steps": sum(r.computed_steps for r in self.runtimes),
            "forecast_steps": sum(r.forecast_steps for r in self.runtimes),
            "state_bytes": sum(st.nbytes for st in states.values()),
            "recompiles": sum(n - 1 for n in self.compiled_frames.values()),
            "fallbacks": list(self.fallbacks),
            "contexts": sorted({c for r in self.runtimes for c in r.states}),
            # Per rank: collectives inside the regions, and those forecast steps skipped.
            **collective_stats(self.runtimes),
            # Values replaced by the last computed value because the forecast was inf/NaN, and
            # inf/NaN values the model itself produced on computed steps (read from the device).
            "nonfinite_forecast_values": sum(forecast for forecast, _ in nonfinite),
            "nonfinite_computed_values": sum(computed for _, computed in nonfinite),
            "interrupted": self.interrupted,
        }


def _same_regions(a: tuple, b: tuple) -> bool:
    """Two graphs' tables shadow the same region outputs (maybe at other sizes or dtypes)."""
    return [entry[:2] for entry in a[0]] == [entry[:2] for entry in b[0]]


class GraphRuntime:
    """The callable the backend returns to Dynamo for one graph (and what a loaded AOTInductor
    artefact dispatches with): two compiled programs taking ``(*user_inputs, *tables, scalars)``."""

    def __init__(self, controller: Controller, compute_fn: Callable, forecast_fn: Callable,
                 device: torch.device, *, tables: list[TableSpec], shapes: TableShapes,
                 region_names: list[str], skipped: list[tuple[str, str]],
                 graphs: TaylorSeerGraphs | None = None, time_index: int | None = None) -> None:
        self.controller = controller
        self.graphs = graphs  # the rewritten graphs, for inspection (None for a loaded artefact)
        self.compute_fn = compute_fn
        self.forecast_fn = forecast_fn
        self.device = device
        self.table_specs = tables
        self.region_names = region_names
        self.skipped = skipped
        self.options = controller.options
        self.shapes = shapes
        self.states: dict[str, TaylorState] = {}
        self._state_keys: dict[str, tuple] = {}
        # What the tables hold; graphs with equal layouts can continue each other's state.
        self.outputs = (tuple((t.region, t.output_index, t.dtype) for t in self.table_specs),
                        self.options.torch_state_dtype, device)
        self.computed_steps = 0
        self.forecast_steps = 0
        # options.time != "step": which argument holds the sampler time, and the sigma lookup.
        self.time_index = time_index
        self.sigma_table = None
        if time_index is not None and self.options.alphas_cumprod is not None:
            abar = torch.tensor(self.options.alphas_cumprod, dtype=torch.float64)
            self.sigma_table = sigmas_from_alphas_cumprod(abar).to(device)
        controller.runtimes.append(self)

    @classmethod
    def for_graphs(cls, controller: Controller, graphs: TaylorSeerGraphs, compute_fn: Callable,
                   forecast_fn: Callable, device: torch.device,
                   time_index: int | None = None) -> GraphRuntime:
        return cls(controller, compute_fn, forecast_fn, device, tables=graphs.guards.tables,
                   shapes=TableShapes.of(graphs), region_names=graphs.guards.region_names,
                   skipped=graphs.skipped, graphs=graphs, time_index=time_index)

    def reset(self) -> None:
        for state in self.states.values():
            state.reset()

    def _state_for(self, context: str, args: tuple) -> TaylorState:
        key = self.shapes.key(args)
        state = self.states.get(context)
        if (state is not None and self._state_keys[context] == key
                and self.controller.latest_states.get(context) is state):
            return state
        return self._switch_state(context, key, state)

    def _switch_state(self, context: str, key: tuple, own: TaylorState | None) -> TaylorState:
        """Slow path: this graph's first call in `context`, new input sizes, or the context's
        last call ran in another graph (Dynamo switched graphs, or the model has graph breaks)."""
        shapes = self.shapes.resolve(key)
        layout = (self.outputs, tuple(shapes))
        latest = self.controller.latest_states.get(context)
        if latest is not None and latest.layout == layout:
            state = latest  # the same tables in another graph: continue the context's history
        elif own is not None and own.layout == layout:
            state = own  # graph breaks: each graph keeps its own tables
        else:
            if latest is not None and latest.calls and _same_regions(latest.layout[0], self.outputs):
                self.controller.warn_once(
                    "input shapes or dtypes changed in the middle of a generation; the Taylor "
                    "state was dropped and the next step is computed (state from one shape or "
                    "dtype is never reused for another). Call ts_compile.reset(model) between "
                    "generations.")
            state = TaylorState(shapes, self.options.order, self.options.torch_state_dtype,
                                self.device, layout=layout)
        self.states[context] = state
        self._state_keys[context] = key
        self.controller.latest_states[context] = state
        return state

    def __call__(self, *args: Any) -> Any:
        try:
            return self._step(args)
        except BaseException:
            # A generation cut short (an error, Ctrl-C, out of memory): its history must not
            # leak into the next one, whose first call could otherwise be taken for step k + 1.
            self.controller.interrupted += 1
            self.controller.reset()
            raise

    def _step(self, args: tuple) -> Any:
        controller = self.controller
        state = self._state_for(controller.context, args)
        step = controller.step_index
        if step is None:
            step = state.calls
        elif state.last_step is not None and step <= state.last_step:
            state.reset()  # the pipeline's step index went back: a new generation
        num_steps = controller.num_steps or self.options.num_steps
        order = self.options.order
        in_time = self.time_index is not None
        now = time_value(args[self.time_index], self.sigma_table).to(self.device) if in_time else None
        if state.filled == 0 or is_computed_step(step, self.options, num_steps):
            # In sampler time the host writes unit steps; the device scales them (no sync).
            dt = 1 if in_time else (0 if state.last_computed is None else step - state.last_computed)
            state.write_scalars(compute_step_scalars(order, dt, state.filled))
            if in_time:
                apply_device_time(state.scalars, now, state.last_time, state.time_exponents,
                                  computed=True)
            out = self.compute_fn(*args, *state.tables, state.scalars)
            state.record_computed(step)
            self.computed_steps += 1
        else:
            offset = 1 if in_time else step - state.last_computed
            state.write_scalars(forecast_step_scalars(order, offset, state.filled))
            if in_time:
                apply_device_time(state.scalars, now, state.last_time, state.time_exponents,
                                  computed=False)
            out = self.forecast_fn(*args, *state.tables, state.scalars)
            self.forecast_steps += 1
        state.calls += 1
        state.last_step = step
        if num_steps is not None and step >= num_steps - 1:
            state.reset()  # the generation is over; the next call starts a new one
        return out
