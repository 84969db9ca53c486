"""Taylor state of one compiled graph for one branch ("cond", "uncond", a detected second call).

Kept apart from behaviour: the runtime decides, this holds. The tables and the per-step scalars
are allocated once and updated in place, so their addresses never change (CUDA graphs replay
against static addresses). `reset()` is a first-class operation: it forgets the history, and the
next step is computed, whatever the schedule says. `Branch` holds one branch's states, one per
graph, and which of them is the generation's latest.
"""

from __future__ import annotations

import array

import sympy
import torch

from .adaptive import BranchSchedule
from .calling import StateLayout
from .passes import TaylorSeerGraphs
from .analysis.regions import example_value
from .taylor import host_scalars_length, nonfinite_slots


class TaylorState:
    """Tables for the live outputs of one graph, plus the host-side history they summarise."""

    def __init__(self, layout: StateLayout, shapes: list[tuple[int, ...]], device: torch.device,
                 holds: tuple = ()) -> None:
        self.state_layout = layout
        self.order = order = layout.order
        self.shapes = shapes
        self.holds = holds  # what the tables hold (see GraphRuntime.outputs), for sharing
        # Per live output, its rows D_0..D_order, each a tensor of the output's shape (see
        # `ts_compile.taylor`); flat, in the order the graphs take them (calling.py).
        self.tables = layout.new_rows(shapes, device)
        self.scalars = layout.new_scalars(device)
        # The graphs' state arguments, in calling.py's order: built once, not per call.
        self.inputs = (*self.tables, self.scalars)
        self._host_part = self.scalars[:host_scalars_length(order)]  # what write_scalars writes
        # On CPU the scalars are host memory: written in place through a NumPy view (no tensor
        # built per step; CPU kernels are synchronous, so no call can still be reading them), or
        # through a memoryview of it when the values come packed as float32 (a plain memcpy).
        self._in_place = _numpy_view(self._host_part) if device.type == "cpu" else None
        self._in_place_raw = None if self._in_place is None else memoryview(self._in_place)
        # Forecasting in sampler time (options.time): the times of the table's computed steps,
        # newest first (`taylor.apply_device_time`), and the powers 0..order.
        self.node_times = torch.zeros(max(order, 1), dtype=torch.float32, device=device)
        self.time_exponents = torch.arange(order + 1, dtype=torch.float32, device=device)
        self._pinned = device.type == "cuda"
        # options.adaptive: the norms of the rows the last computed step wrote (adaptive.py).
        self.signal = None
        self.generation = -1  # the branch generation this state's history belongs to
        self.reset()

    def reset(self) -> None:
        """Forget the history. Tables keep their storage (they are rewritten before any read)."""
        self.filled = 0  # orders present in the tables (0: nothing to forecast from)
        self.nodes: list[int] = []  # the computed steps the table holds, newest first
        self.last_step: int | None = None  # step index of the last call that used this state

    @property
    def nbytes(self) -> int:
        return self.state_layout.nbytes(self.shapes)

    def write_scalars(self, values: list[float] | array.array) -> None:
        """Copy this step's scalars (not the counters after them) to the device, no host sync.
        `values`: floats, or an `array("f")` of them (`Forecaster.forecast_scalars_f32`)."""
        if self._in_place is not None:
            if isinstance(values, array.array):
                self._in_place_raw[:] = values  # same format and length, or it raises
            else:
                self._in_place[:] = values
            return
        host = torch.tensor(values, dtype=torch.float32, pin_memory=self._pinned)
        self._host_part.copy_(host, non_blocking=self._pinned)

    def nonfinite_counts(self) -> tuple[int, int]:
        """(non-finite forecast values, non-finite computed features) so far: reads the device
        counters, so it syncs; only `stats` calls it."""
        forecast, computed = nonfinite_slots(self.order)
        return int(self.scalars[forecast].item()), int(self.scalars[computed].item())

    def record_computed(self, step: int, differenced: int) -> None:
        """A computed step rebuilt the table from `differenced` rows of the old one."""
        self.filled = min(differenced + 1, self.order + 1)
        self.nodes = [step, *self.nodes[:self.filled - 1]]


def _numpy_view(tensor: torch.Tensor):
    """A NumPy array sharing `tensor`'s memory, or None without NumPy."""
    try:
        return tensor.numpy()
    except (RuntimeError, ImportError):
        return None


class Branch:
    """The Taylor states of one branch in one thread, one per graph (GraphRuntime).

    `latest` is the state the branch's last call used. A graph's own state is resumed only if it
    ran the branch's previous step (graph breaks: every graph runs once per step); after other
    steps ran in another graph (a shape or dtype that comes back), it starts over.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        # Per module instance, for a graph that several modules run (a block's own frame after
        # a graph break in the model's loop): each block's own states, as a branch of its own.
        self.instances: dict[int, Branch] = {}
        self.states: dict[object, TaylorState] = {}  # per graph
        self.keys: dict[object, tuple] = {}  # the input-size key each graph's state was made for
        self.generation = -1  # the track generation of the steps below (older states are stale)
        self.latest: TaylorState | None = None
        self.step: int | None = None  # step of the current call
        self.previous_step: int | None = None  # step of the branch's call before it
        self.schedule = BranchSchedule()  # options.adaptive: this branch's decisions

    def instance(self, key: int) -> Branch:
        """The branch of one module instance within this one, at this one's step."""
        branch = self.instances.get(key)
        if branch is None:
            branch = self.instances[key] = Branch(self.name)
        branch.enter(self.step, self.generation)
        return branch

    def all_states(self) -> list[TaylorState]:
        return [*self.states.values(),
                *(st for branch in self.instances.values() for st in branch.all_states())]

    def enter(self, step: int, generation: int) -> None:
        """A call of this branch at `step` of `generation` begins."""
        if generation != self.generation:
            self.generation, self.latest, self.step = generation, None, None
        if step != self.step:
            self.previous_step, self.step = self.step, step


class TableShapes:
    """Concrete table shapes for a call's arguments (tables follow Dynamo's dynamic sizes).

    `key(args)` is cheap (run per call); `resolve(key)` only when the key changes.
    """

    def __init__(self, shapes: list[tuple], user_inputs: list[torch.fx.Node] = ()) -> None:
        """`shapes` of the tables' outputs (ints or SymInts); `user_inputs`: the graph's user
        placeholders, where the symbols of dynamic sizes come from (unused when all is static)."""
        self.shapes = shapes
        self.static = all(isinstance(d, int) for shape in self.shapes for d in shape)
        self.sources: list[tuple[int, int | None, sympy.Symbol]] = []
        if self.static:
            return
        for index, node in enumerate(user_inputs):
            value = example_value(node)
            if isinstance(value, torch.SymInt) and isinstance(value.node.expr, sympy.Symbol):
                self.sources.append((index, None, value.node.expr))
            elif isinstance(value, torch.Tensor):
                for dim, size in enumerate(value.shape):
                    if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                        self.sources.append((index, dim, size.node.expr))

    @classmethod
    def of(cls, graphs: TaylorSeerGraphs) -> TableShapes:
        placeholders = list(graphs.guarded.graph.find_nodes(op="placeholder"))
        return cls([spec.shape for spec in graphs.guards.tables],
                   placeholders[:graphs.guards.num_user_inputs])

    def key(self, args: tuple) -> tuple:
        if self.static:
            return ()
        return tuple(args[i] if d is None else args[i].shape[d] for i, d, _ in self.sources)

    def resolve(self, key: tuple) -> list[tuple[int, ...]]:
        if self.static:
            return [tuple(shape) for shape in self.shapes]
        mapping = {sym: value for (_, _, sym), value in zip(self.sources, key)}
        return [tuple(d if isinstance(d, int) else int(d.node.expr.xreplace(mapping))
                      for d in shape) for shape in self.shapes]
