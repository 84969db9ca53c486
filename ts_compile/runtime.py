"""Host-side dispatch: per call, pick the compute or the forecast graph and feed it its state.

`Controller`: one per `torch.compile(...)` call (one compiled model, or one compiled copy of a
module class). Holds the options, fallbacks, compile counts, warnings given, and one `Lane` per
thread.

`Lane` (lane.py): one thread's use of the compiled model: where its calls are (step, branch,
generation) and the Taylor states of every branch.

`GraphRuntime`: one per graph Dynamo hands the backend. Compiled copies whose options compare
equal share it (Dynamo reuses the graph), so it holds no state: that lives in the lane of the
copy being called (compile_calls.py marks each call's lane). Its `__call__` is the hot path: place
the call (the first graph of a model call), look up the branch's state, a few integer comparisons,
one small host->device copy of the step's scalars, one call. No device->host sync. A forecast step
that plainly follows its call name's last step takes a shortcut through the same decisions
(`_forecast_by_shortcut`, with what the last step kept in `ForecastShortcut`).
"""

from __future__ import annotations

import collections
import logging
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .adaptive import Adaptive, adaptive_stats
from .calling import StateLayout
from .distributed import collective_stats
from .lane import DEFAULT_CONTEXT, EVENTS, HOST_CLOCK, LATE_CLOCK, NO_CLOCK, Lane, current
from .options import TaylorSeerOptions
from .passes import TableSpec, TaylorSeerGraphs
from .schedule import is_computed_step
from .state import Branch, TableShapes, TaylorState
from .stepping import PLAIN_NEXT, Track, host_time as time_on_host
from .taylor import (Forecaster, apply_device_time, orders_to_difference,
                     sigmas_from_alphas_cumprod, time_value)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONTEXT", "Controller", "GraphRuntime", "current"]


class Controller:
    """Everything the graphs of one compiled model (copy) share, and its lanes (one per thread)."""

    def __init__(self, options: TaylorSeerOptions) -> None:
        self.options = options
        self.runtimes: list[GraphRuntime] = []  # the graphs this copy has run (or compiled)
        self.runtime_set: set[GraphRuntime] = set()
        self.fallbacks: list[str] = []  # why a graph got a plain compile
        self.compiled_frames: dict[int, int] = {}  # Dynamo frame id -> graphs compiled for it
        self.lanes: list[Lane] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def lane(self) -> Lane:
        """The calling thread's lane (made on its first call)."""
        try:
            return self._local.lane
        except AttributeError:
            lane = self._local.lane = Lane(self)
            with self._lock:
                self.lanes.append(lane)
            return lane

    def enter_call(self) -> Callable[[], None]:
        """Call boundary (a Dynamo context hook): a model call begins; returns its end."""
        return self.lane().begin_call()

    def adopt(self, runtime: GraphRuntime) -> None:
        """This copy runs `runtime` (compiled by it, or by an equal copy: Dynamo shares graphs)."""
        with self._lock:
            if runtime not in self.runtime_set:
                self.runtimes.append(runtime)
                self.runtime_set.add(runtime)

    def warn_once(self, message: str, key: str | None = None) -> None:
        key = message if key is None else key
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"ts_compile: {message}", stacklevel=3)

    def record_compile(self, frame_id: int | None) -> None:
        if frame_id is not None:
            self.compiled_frames[frame_id] = self.compiled_frames.get(frame_id, 0) + 1

    # What callers declare; each applies to the calling thread's lane.
    def reset(self) -> None:
        """Start a new generation in the calling thread: every branch forgets its history."""
        self.lane().reset()

    def set_context(self, context: Any | None) -> None:
        """Take a pipeline's call context (diffusers `CacheContext`, or None when it ends)."""
        self.lane().set_context(context)

    def stats(self) -> dict[str, Any]:
        """Counters over all graphs and threads; tables shared by several graphs count once."""
        with self._lock:
            lanes, runtimes = list(self.lanes), list(self.runtimes)
        states = {id(st): st for lane in lanes for st in lane.all_states()}
        nonfinite = [st.nonfinite_counts() for st in states.values()]  # one read per state
        steps = collections.Counter()
        events = collections.Counter()
        for lane in lanes:
            for runtime, (computed, forecast) in lane.steps.items():
                steps[runtime, 0] += computed
                steps[runtime, 1] += forecast
            events.update(lane.events)
        return {
            "forecaster": self.options.forecaster,  # how forecast steps combine the rows
            "graphs": len(runtimes),
            "regions": list(dict.fromkeys(n for r in runtimes for n in r.region_names)),
            "skipped_regions": list(dict.fromkeys(s for r in runtimes for s in r.skipped)),
            "live_outputs": len({(t.region, t.output_index)
                                 for r in runtimes for t in r.table_specs}),
            "computed_steps": sum(n for (_, kind), n in steps.items() if kind == 0),
            "forecast_steps": sum(n for (_, kind), n in steps.items() if kind == 1),
            "state_bytes": sum(st.nbytes for st in states.values()),
            "recompiles": sum(n - 1 for n in self.compiled_frames.values()),
            "fallbacks": list(self.fallbacks),
            "contexts": sorted({b.name for lane in lanes for b in lane.all_branches()
                                if b.states}),
            "threads": len(lanes),
            # Per rank: collectives inside the regions, and those this copy's forecast steps
            # skipped (a graph shared with other copies counts this copy's steps only).
            **_collective_stats(runtimes, steps),
            # Values replaced by the last computed value because the forecast was inf/NaN, and
            # inf/NaN values the model itself produced on computed steps (read from the device).
            "nonfinite_forecast_values": sum(forecast for forecast, _ in nonfinite),
            "nonfinite_computed_values": sum(computed for _, computed in nonfinite),
            # How calls were placed when the caller did not say (stepping.py), and mistakes seen.
            **{event: events[event] for event in EVENTS},
            # options.adaptive: the steps it chose (None when off).
            "adaptive": (None if self.options.adaptive is None else
                         adaptive_stats(lanes, getattr(self._local, "lane", None))),
        }


def _collective_stats(runtimes: list[GraphRuntime], steps: collections.Counter) -> dict:
    """`collective_stats` over what it reads of each graph, with this copy's forecast steps (a
    graph may be shared with other copies); the per-graph collective counts stay cached."""
    views = [types.SimpleNamespace(graphs=r.graphs, forecast_steps=steps[r, 1],
                                   collectives=getattr(r, "collectives", None)) for r in runtimes]
    found = collective_stats(views)
    for runtime, view in zip(runtimes, views):
        runtime.collectives = view.collectives
    return found


def _same_regions(a: tuple, b: tuple) -> bool:
    """Two graphs' tables shadow the same region outputs (maybe at other sizes or dtypes)."""
    return [entry[:2] for entry in a[0]] == [entry[:2] for entry in b[0]]


class GraphRuntime:
    """The callable the backend returns to Dynamo for one graph (and what a loaded AOTInductor
    artefact dispatches with): two compiled programs taking ``(*user_inputs, *rows, scalars)``
(calling.py; `state_layout`).

    `latent_index`, `clock_index`: positions of the latent input (the forward's first argument)
    and of the time input among the user inputs, for placing calls (None if absent);
    `instance_index`: a parameter input telling apart the modules that share the graph;
    `time_index`: the time input the forecast is in (options.time != "step"); `discover`: the
    graph runs under Dynamo, so a call nobody announced is looked up on the stack.
    """

    def __init__(self, controller: Controller, compute_fn: Callable, forecast_fn: Callable,
                 device: torch.device, *, tables: list[TableSpec], shapes: TableShapes,
                 region_names: list[str], skipped: list[tuple[str, str]],
                 graphs: TaylorSeerGraphs | None = None, time_index: int | None = None,
                 latent_index: int | None = None, clock_index: int | None = None,
                 clock_device: torch.device | None = None, instance_index: int | None = None,
                 discover: bool = False) -> None:
        self.controller = controller  # the copy that compiled it (options; direct calls)
        self.graphs = graphs  # the rewritten graphs, for inspection (None for a loaded artefact)
        self.compute_fn = compute_fn
        self.forecast_fn = forecast_fn
        self.device = device
        self.table_specs = tables
        # What the graphs take after the user's inputs (calling.py).
        self.state_layout = StateLayout.of(tables, controller.options)
        self.region_names = region_names
        self.skipped = skipped
        self.options = controller.options
        self.shapes = shapes
        # What the tables hold; graphs with equal layouts can continue each other's state.
        self.outputs = (tuple((t.region, t.output_index, t.dtype) for t in self.table_specs),
                        self.options.torch_state_dtype, device)
        self.latent_index = latent_index
        # A graph several module instances run (a block's own frame): a parameter input whose
        # identity says which module is calling, each with its own state.
        self.instance_index = instance_index
        self.clock_index = time_index if clock_index is None else clock_index
        clock_device = device if clock_device is None else clock_device
        self.clock_kind = (NO_CLOCK if self.clock_index is None else
                           HOST_CLOCK if clock_device.type == "cpu" else
                           LATE_CLOCK if clock_device.type == "cuda" else NO_CLOCK)
        self.discover = discover
        # Set when compiled with guard_filter_fn=ts_compile.skip_module_guards: the module tree
        # is then checked at each generation's first step (module_guards.py), not by Dynamo.
        self.module_snapshot = None
        # Calls this graph served, over every copy and thread (stats counts per copy, in lanes).
        self.computed_steps = 0
        self.forecast_steps = 0
        # options.time != "step": which argument holds the sampler time, and the sigma lookup.
        self.time_index = time_index
        self.sigma_table = None
        if time_index is not None and self.options.alphas_cumprod is not None:
            abar = torch.tensor(self.options.alphas_cumprod, dtype=torch.float64)
            self.sigma_table = sigmas_from_alphas_cumprod(abar).to(device)
        # How the host fills each step's scalars (options.forecaster; taylor.py).
        self.forecaster = Forecaster(self.options.forecaster, self.options.order,
                                     self.options.hermite_sigma, unit_time=time_index is not None)
        self.time_basis = self.forecaster.device_basis(device) if time_index is not None else None
        # options.adaptive: the compute graph returns its rows' norms last (adaptive.py).
        self.adaptive = (None if self.options.adaptive is None else
                         Adaptive(self.options, self.forecaster, device, time_index is not None))
        if self.adaptive is not None and self.sigma_table is not None:
            self.adaptive.sigma_table = self.sigma_table.cpu()
        # Forecast steps may take the shortcut (below `_step`) where the plain schedule in step
        # units decides, with one state per branch and a time input read on the host (or none).
        self.shortcut_applies = (self.adaptive is None and time_index is None
                                 and instance_index is None and self.clock_kind != LATE_CLOCK)
        controller.adopt(self)

    @classmethod
    def for_graphs(cls, controller: Controller, graphs: TaylorSeerGraphs, compute_fn: Callable,
                   forecast_fn: Callable, device: torch.device, **inputs: Any) -> GraphRuntime:
        return cls(controller, compute_fn, forecast_fn, device, tables=graphs.guards.tables,
                   shapes=TableShapes.of(graphs), region_names=graphs.guards.region_names,
                   skipped=graphs.skipped, graphs=graphs, discover=True, **inputs)

    @property
    def states(self) -> dict[str, TaylorState]:
        """This graph's state per branch, in the calling thread's lane of the compiling copy."""
        lane = self.controller.lane()
        return {b.name: b.states[self] for b in lane.all_branches() if self in b.states}

    def __call__(self, *args: Any) -> Any:
        lane = getattr(current, "lane", None)
        if lane is None or not lane.in_call or self not in lane.controller.runtime_set:
            lane = self._unannounced_call()
        try:
            return self._step(lane, args)
        except BaseException as error:
            if not lane.in_call:  # no call boundary will see it: reset here
                lane.interrupt(error)
            raise

    def _unannounced_call(self) -> Lane:
        """A call without a boundary mark: a copy's first call of a graph another copy compiled
        (found on the stack; its later calls are marked), or a direct call (an artefact, a
        benchmark): the compiling copy's lane, every call placed on its own."""
        controller = None
        if self.discover:
            from .compile_calls import controller_of_running_call

            controller = controller_of_running_call()
        controller = controller or self.controller
        controller.adopt(self)
        lane = controller.lane()
        lane.placed = False
        return lane

    def _state_for(self, branch: Branch, args: tuple) -> TaylorState:
        if self.instance_index is not None:
            branch = branch.instance(id(args[self.instance_index]))
        key = self.shapes.key(args)
        state = branch.states.get(self)
        if (state is not None and branch.latest is state and branch.keys[self] == key
                and state.generation == branch.generation):
            return state
        return self._switch_state(branch, key, state)

    def _switch_state(self, branch: Branch, key: tuple, own: TaylorState | None) -> TaylorState:
        """Slow path: this graph's first call in the branch or generation, new input sizes, or the
        branch's last call ran in another graph (Dynamo switched graphs, or graph breaks).
        `_forecast_by_shortcut` repeats the keep-own-state condition below: change both."""
        shapes = self.shapes.resolve(key)
        holds = (self.outputs, tuple(shapes))
        latest = branch.latest
        if latest is not None and latest.holds == holds:
            state = latest  # the same tables in another graph: continue the branch's history
        elif (own is not None and own.holds == holds and own.generation == branch.generation
              and own.last_step is not None and own.last_step == branch.previous_step):
            state = own  # graph breaks: each graph keeps its own tables, run every step
        else:
            if (latest is not None and latest.last_step is not None
                    and _same_regions(latest.holds[0], self.outputs)):
                self.controller.warn_once(
                    "input shapes or dtypes changed in the middle of a generation; the Taylor "
                    "state was dropped and the next step is computed (state from one shape or "
                    "dtype, or from earlier steps, is never reused). Call "
                    "ts_compile.reset(model) between generations.")
            if own is not None and own.holds == holds:
                state = own  # its storage, not its history
            else:
                state = TaylorState(self.state_layout, shapes, self.device, holds=holds)
            state.reset()
        state.generation = branch.generation
        branch.states[self] = state
        branch.keys[self] = key
        branch.latest = state
        return state

    def _check_module_edits(self) -> None:
        from .compile_calls import model_of_running_call

        model = model_of_running_call() or self.module_snapshot.model  # None: a direct call
        self.module_snapshot.verify(model)

    def _step(self, lane: Lane, args: tuple) -> Any:
        placing = not lane.placed  # the first graph of this model call
        if placing:
            shortcut = lane.shortcuts.get(lane.context or DEFAULT_CONTEXT)
            decided = None
            if shortcut is not None and shortcut.runtime is self:
                out = self._forecast_by_shortcut(shortcut, lane, args)
                if type(out) is not Declined:
                    return out
                decided = out.decided
            lane.place(None if self.latent_index is None else args[self.latent_index],
                       None if self.clock_index is None else args[self.clock_index],
                       self.clock_kind, decided)
        branch, step = lane.branch, lane.step
        state = self._state_for(branch, args)
        counts = lane.steps.get(self) or lane.count(self)
        in_time = self.time_index is not None
        now = time_value(args[self.time_index], self.sigma_table).to(self.device) if in_time else None
        if state.filled == 0 and self.module_snapshot is not None:
            self._check_module_edits()
        adaptive, host_time = self.adaptive, None
        if adaptive is not None:  # the branch's decision (adaptive.py) instead of the schedule
            if in_time and args[self.time_index].device.type == "cpu":  # free to read here
                host_time = float(time_value(args[self.time_index], adaptive.sigma_table))
            compute = adaptive.decide(branch, step, lane.num_steps, host_time, lane)
        else:
            compute = is_computed_step(step, self.options, lane.num_steps)
        if state.filled == 0 or compute:
            # In sampler time the host writes unit steps; the device completes them (no sync).
            rows = orders_to_difference(state.filled, step, self.options.warmup,
                                        self.options.recursion)
            state.write_scalars(self.forecaster.compute_scalars(step, state.nodes, rows))
            if in_time:
                apply_device_time(state.scalars, now, state.node_times, state.time_exponents,
                                  True, self.forecaster.kind, self.time_basis)
            out = self.compute_fn(*args, *state.inputs)  # calling.py's order
            state.record_computed(step, rows)
            if adaptive is not None:  # its rows' norms come last: not the model's
                out, norms = out[:-1], out[-1]
                adaptive.receive(state, norms, host_time, lane)
                adaptive.computed(branch, step)
            counts[0] += 1
            self.computed_steps += 1
        else:
            state.write_scalars(self.forecaster.forecast_scalars_f32(step, state.nodes,
                                                                     state.filled))
            if in_time:
                apply_device_time(state.scalars, now, state.node_times, state.time_exponents,
                                  False, self.forecaster.kind, self.time_basis)
            out = self.forecast_fn(*args, *state.inputs)
            counts[1] += 1
            self.forecast_steps += 1
        state.last_step = step
        if placing:
            self._keep_shortcut(lane, branch, state, counts)
        return out

    # -- the forecast shortcut ---------------------------------------------------------------
    # Most calls are forecast steps that plainly follow their call name's last step, in its
    # graph, branch and state. For them, what the full path would look up is kept from that last
    # step (`ForecastShortcut`) and checked to still hold, and the placement decision is the
    # track's own (`Track.decide`). Anything else (a computed step, a second call, a new
    # generation, new shapes, another graph) takes the full path, which keeps the shortcut for
    # the next step. Measured: ~2 us of the runtime's ~12 us in a forecast step between real
    # steps (docs/performance.md); tests/test_forecast_shortcut.py holds it to the full path.

    def _keep_shortcut(self, lane: Lane, branch: Branch, state: TaylorState,
                       counts: list[int]) -> None:
        """After a placing call that ran the full path: keep (or drop) its call name's shortcut."""
        name = lane.context or DEFAULT_CONTEXT
        track = lane.tracks[name]
        if track.branch != 0:  # a second call of a step: the next step's first call is branch 0's
            return
        if (not self.shortcut_applies or lane.late is not None
                or branch.states.get(self) is not state):
            lane.shortcuts.pop(name, None)
            return
        num_steps = lane.num_steps
        kept = lane.shortcuts.get(name)
        if (kept is not None and kept.runtime is self and kept.state is state
                and kept.generation == track.generation and kept.num_steps == num_steps):
            return
        lane.shortcuts[name] = ForecastShortcut(self, track, branch, state, counts,
                                                track.generation, num_steps)

    def _forecast_by_shortcut(self, shortcut: ForecastShortcut, lane: Lane, args: tuple) -> Any:
        """The forecast step the full path would run, with the same effects; or `Declined`,
        having changed nothing, where it might not be one (with the placement's decision where
        it asked for it, for `Lane.place` to use)."""
        track, branch, state = shortcut.track, shortcut.branch, shortcut.state
        generation, num_steps = shortcut.generation, lane.num_steps
        if (track.generation != generation or branch.generation != generation
                or num_steps != shortcut.num_steps or lane.late is not None
                or branch.states.get(self) is not state
                or state.generation != generation or state.filled == 0
                or (not self.shapes.static and self.shapes.key(args) != branch.keys[self])):
            return NOT_ASKED
        given = lane.given_step
        step = track.step + 1 if given is None else given
        if shortcut.computed(step):
            return NOT_ASKED
        latest = branch.latest
        if latest is not state:  # `_switch_state`: other graphs ran the branch since (graph
            # breaks); the state goes on if the branch's previous step ran it, in these tables
            previous = branch.step if step != branch.step else branch.previous_step
            if ((latest is not None and latest.holds == state.holds)
                    or state.last_step is None or state.last_step != previous):
                return NOT_ASKED
        latent = None if self.latent_index is None else args[self.latent_index]
        time = time_on_host(args[self.clock_index]) if self.clock_kind == HOST_CLOCK else None
        clock = lane.clock
        moved = clock.move(time)
        decision = track.decide(latent, time, moved, clock, given, num_steps, lane.in_generation)
        if decision != PLAIN_NEXT:  # e.g. the second call of a step (CFG as two unnamed calls)
            return Declined((time, moved, decision))
        # `Lane.place` with that decision, then the forecast branch of `_step`.
        track.next_step(latent, time, step)
        clock.advance(time, moved, False)
        branch.enter(step, generation)
        branch.latest = state
        lane.branch, lane.step, lane.placed = branch, step, lane.in_call
        state.write_scalars(self.forecaster.forecast_scalars_f32(step, state.nodes, state.filled))
        out = self.forecast_fn(*args, *state.inputs)
        shortcut.counts[1] += 1
        self.forecast_steps += 1
        state.last_step = step
        return out


class Declined:
    """`_forecast_by_shortcut`'s answer when the full path has to run the step: `decided` is
    (time, moved, decision) where it already asked the track (`Lane.place` reuses it), or None."""

    __slots__ = ("decided",)

    def __init__(self, decided: tuple | None) -> None:
        self.decided = decided


NOT_ASKED = Declined(None)


class ForecastShortcut:
    """What a call name's next forecast step needs, kept in its lane by the call name's last
    full-path step (`GraphRuntime._keep_shortcut`): the graph, the call name's track, its branch 0
    and that branch's state in the graph, the graph's step counters in the lane, the track's
    generation and the number of steps the schedule was read for. It holds no decision: each use
    checks that these still hold and asks the track."""

    __slots__ = ("runtime", "track", "branch", "state", "counts", "generation", "num_steps",
                 "_computed")

    def __init__(self, runtime: GraphRuntime, track: Track, branch: Branch, state: TaylorState,
                 counts: list[int], generation: int, num_steps: int | None) -> None:
        self.runtime, self.track, self.branch, self.state = runtime, track, branch, state
        self.counts, self.generation, self.num_steps = counts, generation, num_steps
        # The schedule's answers for a known length, read once (None: ask it per step).
        self._computed = (None if num_steps is None else
                          [is_computed_step(s, runtime.options, num_steps)
                           for s in range(num_steps)])

    def computed(self, step: int) -> bool:
        """`is_computed_step(step, options, num_steps)`; past the end, True (the full path
        decides what a step past the end is)."""
        if self._computed is None:
            return is_computed_step(step, self.runtime.options, None)
        return step >= len(self._computed) or self._computed[step]
