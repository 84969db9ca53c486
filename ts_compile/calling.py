"""The graphs' calling convention: what the compute and forecast graphs take, and which of the
user's inputs is the time.

Every graph the passes build, whether compiled by Dynamo's backend, exported as a program or run
from a loaded artefact, is called as

    graph(*user_inputs, *rows, scalars)

- the user inputs, as Dynamo (or `torch.export`) flattened them;
- per live output (a `TableSpec`), its Taylor table's `order + 1` rows D_0..D_order, each of the
  output's shape in the state dtype;
- the float32 scalars vector (`taylor.scalars_length`).

`StateLayout` is that layout, built here once and used by the backend (example inputs for
compiling), the runtime (every call), export (the programs' example inputs and the manifest's
`state` record) and the loaded runner (the manifest read back). `time_position` and
`clock_position` say which input is the time, from (name, position) pairs that the backend reads
from Dynamo's sources and export from the forward's signature.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .options import OptionError, TaylorSeerOptions
from .passes import TableSpec
from .stepping import TIME_INPUT_NAMES
from .taylor import scalars_length


def numel(shape: Sequence[Any]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def state_bytes(shapes: Sequence[Sequence[Any]], order: int, dtype: torch.dtype) -> int:
    """Bytes of the Taylor tables: (order + 1) rows per live output, each numel x itemsize of
    the state dtype (the scalars vector, a few floats, is not counted)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return (order + 1) * sum(numel(shape) for shape in shapes) * itemsize


def live_elements(nbytes: int, order: int, dtype: torch.dtype = torch.float32) -> float:
    """Elements of the live outputs behind `nbytes` of state: the inverse of `state_bytes`."""
    return nbytes / state_bytes([(1,)], order, dtype)


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """The state inputs of one graph pair: its live outputs' tables, then the scalars."""

    tables: tuple[TableSpec, ...]  # the live outputs, in the order the graphs take their rows
    order: int
    dtype: torch.dtype  # of the tables (options.state_dtype); the outputs keep their own

    @classmethod
    def of(cls, tables: Sequence[TableSpec], options: TaylorSeerOptions) -> StateLayout:
        return cls(tuple(tables), options.order, options.torch_state_dtype)

    @property
    def rows_per_table(self) -> int:
        return self.order + 1

    @property
    def scalar_count(self) -> int:
        return scalars_length(self.order)

    @property
    def num_rows(self) -> int:
        return len(self.tables) * self.rows_per_table

    @property
    def num_state_inputs(self) -> int:
        """Inputs after the user's: every table row, then the scalars vector."""
        return self.num_rows + 1

    def static_shapes(self) -> list[tuple[int, ...]]:
        """The tables' shapes as ints (export's are static; the backend resolves dynamic ones
        per call with `state.TableShapes`)."""
        return [tuple(int(d) for d in t.shape) for t in self.tables]

    def row_shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The shape of each row input, in order, for tables of `shapes`."""
        return [tuple(shape) for shape in shapes for _ in range(self.rows_per_table)]

    def new_rows(self, shapes: Sequence[tuple[int, ...]], device: torch.device
                 ) -> list[torch.Tensor]:
        return [torch.zeros(shape, dtype=self.dtype, device=device)
                for shape in self.row_shapes(shapes)]

    def new_scalars(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.scalar_count, dtype=torch.float32, device=device)

    def nbytes(self, shapes: Sequence[Sequence[Any]] | None = None) -> int:
        """State bytes for tables of `shapes` (default: the specs' own, which must be static)."""
        shapes = self.static_shapes() if shapes is None else shapes
        return state_bytes(shapes, self.order, self.dtype)

    def table_bytes(self, shape: Sequence[Any]) -> int:
        """State bytes of one live output's table."""
        return state_bytes([shape], self.order, self.dtype)

    @staticmethod
    def graph_inputs(user_inputs: Sequence[Any], state: Any) -> tuple:
        """The graphs' arguments for one call: `state.inputs` (a `state.TaylorState`'s rows, then
        its scalars, put together once when the state is made)."""
        return (*user_inputs, *state.inputs)

    def user_inputs(self, flat: Sequence[Any]) -> Sequence[Any]:
        """The user's part of a graph's arguments."""
        return flat[:len(flat) - self.num_state_inputs]

    def state_inputs(self, flat: Sequence[Any]) -> Sequence[Any]:
        """The state's part of a graph's arguments: every row, then the scalars."""
        return flat[len(flat) - self.num_state_inputs:]

    # -- the manifest's `state` record (deploy.py writes it, the runner reads it back) ---------
    def to_manifest(self) -> dict[str, Any]:
        from .artefact import dtype_name

        return {"order": self.order, "dtype": dtype_name(self.dtype),
                "scalars_length": self.scalar_count, "bytes": self.nbytes(),
                "tables": [{"region": t.region, "output_index": t.output_index,
                            "output_name": t.output_name, "shape": [int(d) for d in t.shape],
                            "output_dtype": dtype_name(t.dtype)} for t in self.tables]}

    @classmethod
    def from_manifest(cls, state: Mapping[str, Any]) -> StateLayout:
        from .artefact import DTYPES

        tables = tuple(TableSpec(t["region"], t["output_index"], t["output_name"],
                                 tuple(t["shape"]), DTYPES[t["output_dtype"]])
                       for t in state["tables"])
        return cls(tables, state["order"], DTYPES[state["dtype"]])
# ------------------------------------------------------------------------------------------------
# which input is the time
# ------------------------------------------------------------------------------------------------
def time_position(positions: Mapping[str, int], options: TaylorSeerOptions, *,
                  where: str = "ts_compile", inputs: Sequence[str] | None = None) -> int | None:
    """Position of the input the forecast's time is read from (options.time != "step"), given
    the tensor inputs' positions by argument name; OptionError naming the fix if it is absent
    (listing `inputs`, as the caller knows them, default the names in `positions`)."""
    if options.time == "step":
        return None
    if options.time_input not in positions:
        names = ", ".join(positions if inputs is None else inputs) or "none"
        raise OptionError(
            f"{where}: option time={options.time!r} reads the forward argument "
            f"{options.time_input!r}, but no tensor input of that name reaches the graph "
            f"(inputs: {names}); pass the time as a tensor, set time_input to the argument's "
            "name, or use time='step'.")
    return positions[options.time_input]


def clock_position(positions: Mapping[str, int], options: TaylorSeerOptions) -> int | None:
    """Position of the time input that calls are placed by (stepping.py): the option's
    `time_input`, else the first of the usual names; None if there is none."""
    return next((positions[name] for name in (options.time_input, *TIME_INPUT_NAMES)
                 if name in positions), None)


def positional_parameter_names(fn: Callable) -> list[str]:
    """The names `fn` takes by position (a bound method's `self` left out), following
    `functools.wraps` to the wrapped function; [] where there is no signature to read (a
    builtin, a C extension). What the forward's first argument (the latent) is called."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def first_positions(named: Sequence[tuple[str | None, int]]) -> dict[str, int]:
    """name -> position from (name, position) pairs of tensor inputs, in order: an argument
    that reaches the graph twice counts at its first position."""
    positions: dict[str, int] = {}
    for name, position in named:
        if name is not None:
            positions.setdefault(name, position)
    return positions
