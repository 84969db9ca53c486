"""Pass 4: rewrite each region into a guarded branch (`torch.cond` form).

    out_0, ..., out_k = region(inputs)
becomes
    out_0, ..., out_k = cond(compute, region_and_update_k, forecast_k, (inputs, tables, scalars))

with new graph inputs: one table per live output (``order + 1`` row inputs ``ts_table_r_k_i`` of the
output's shape), the per-step
`scalars` vector (see `ts_compile.taylor`) and the boolean `compute`. The compute branch runs the
region and copies the updated tables in place; the forecast branch evaluates the polynomial
(falling back to the last computed value where it is not finite). Both add the non-finite values
they meet to the counters at the end of `scalars`. A
non-live output is returned as zeros by the forecast branch: under the shared guard it is only
read by regions that are themselves forecast (see `mark_live_outputs`).

The result runs as it is (eagerly, `torch.cond` with grad off) and is the inspectable artefact that
`ts_compile.explain` prints and the property tests check; `take_compute_branches` and
`take_forecast_branches` resolve it.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections import defaultdict

import torch
import torch.fx as fx

from ..analysis.regions import Region, example_value
from ..analysis.side_effects import write_order
from ..options import TaylorSeerOptions
from ..taylor import checked_forecast, counted_nonfinite, nonfinite_slots, updated_table
from ._contract import COND_ONLY, GUARDS_KEY, REGIONS_KEY, NotApplicable, report
from ._surgery import stable_topological_sort

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One live region output and the Taylor table that shadows it."""

    region: str
    output_index: int
    output_name: str
    shape: tuple  # of ints or SymInts (dynamic shapes)
    dtype: torch.dtype  # the output's dtype (the table has the state dtype)


@dataclasses.dataclass
class GuardInfo:
    """Where `insert_guards` put things in the guarded graph."""

    num_user_inputs: int  # the original graph's placeholders come first, unchanged
    tables: list[TableSpec]
    region_names: list[str]
    outputs_per_region: list[int]


def _fake_like(value, shape, dtype):
    fake_mode = getattr(value, "fake_mode", None)
    if fake_mode is None:
        return None
    with fake_mode:
        return torch.empty(shape, dtype=dtype, device=value.device)


def _zeros_node(graph: fx.Graph, value: torch.Tensor, operands: list[fx.Node]) -> fx.Node:
    """Zeros shaped like `value`; symbolic sizes are read off an operand with the same size."""
    sizes = []
    for size in value.shape:
        if isinstance(size, int):
            sizes.append(size)
            continue
        for operand in operands:
            ev = example_value(operand)
            dims = [d for d, s in enumerate(getattr(ev, "shape", ())) if str(s) == str(size)]
            if dims:
                sizes.append(graph.call_function(torch.ops.aten.sym_size.int, (operand, dims[0])))
                break
        else:
            raise NotApplicable(f"cannot express dynamic size {size} of a dead output")
    return graph.call_function(torch.zeros, (sizes,), {"dtype": value.dtype, "device": value.device})


def _count_nonfinite(graph: fx.Graph, scalars: fx.Node, slot: int, finite: fx.Node) -> None:
    """scalars[slot] += number of non-finite values (in place, on the device)."""
    counted = graph.call_function(counted_nonfinite, (scalars, slot, finite))
    graph.call_function(torch.ops.aten.copy_.default, (scalars, counted))


def _branch(gm: fx.GraphModule, region: Region, tables: list[list[fx.Node]], scalars: fx.Node,
            compute: bool, order: int) -> fx.GraphModule:
    graph = fx.Graph(owning_module=gm)
    env: dict[fx.Node, fx.Node] = {}
    for value in [*region.inputs, *(row for rows in tables for row in rows), scalars]:
        placeholder = graph.placeholder(value.name)
        placeholder.meta = dict(value.meta)
        env[value] = placeholder
    operands = [env[v] for v in region.inputs]
    live_tables = iter([env[row] for row in rows] for rows in tables)
    forecast_slot, computed_slot = nonfinite_slots(order)
    results = []
    if compute:
        for node in region.nodes:
            env[node] = graph.node_copy(node, lambda n: env[n])
        for out, is_live in zip(region.outputs, region.live):
            if is_live:
                rows = next(live_tables)
                new = graph.call_function(updated_table, (rows, env[out], env[scalars]))
                for i, row in enumerate(rows):
                    new_row = graph.call_function(operator.getitem, (new, i))
                    graph.call_function(torch.ops.aten.copy_.default, (row, new_row))
                finite = graph.call_function(torch.isfinite, (env[out],))
                _count_nonfinite(graph, env[scalars], computed_slot, finite)
            clone = graph.call_function(torch.clone, (env[out],),
                                        {"memory_format": torch.contiguous_format})
            clone.meta[COND_ONLY] = True
            results.append(clone)
    else:
        for out, is_live in zip(region.outputs, region.live):
            value = example_value(out)
            if is_live:
                checked = graph.call_function(
                    checked_forecast, (next(live_tables), env[scalars], value.dtype))
                finite = graph.call_function(operator.getitem, (checked, 1))
                _count_nonfinite(graph, env[scalars], forecast_slot, finite)
                forecast = graph.call_function(operator.getitem, (checked, 0))
                # Stands for the region's output: code after the region may write into it
                # through views, and `side_effects` follows such writes by the traced storage.
                forecast.meta["example_value"] = value
                results.append(forecast)
            else:
                results.append(_zeros_node(graph, value, operands))
    graph.output(tuple(results))
    return fx.GraphModule(gm, graph, f"{'compute' if compute else 'forecast'}_branch")


@dataclasses.dataclass
class _StateInputs:
    """The placeholders `insert_guards` adds after the original ones."""

    tables: list[list[list[fx.Node]]]  # region -> live output -> rows D_0..D_order
    scalars: fx.Node
    pred: fx.Node  # the guard, `ts_compute`
    specs: list[TableSpec]  # one per live output, in table order


def _table_rows(graph: fx.Graph, out: fx.Node, name: str,
                settings: TaylorSeerOptions) -> list[fx.Node]:
    """`order + 1` row placeholders `{name}_{i}` shaped like `out`, in the state dtype."""
    value = example_value(out)
    rows = []
    for i in range(settings.order + 1):
        row = graph.placeholder(f"{name}_{i}")
        row.meta["example_value"] = _fake_like(value, value.shape, settings.torch_state_dtype)
        # Static address for CUDA graphs: the runtime owns these for good.
        row.meta["tensor_dict"] = {"_dynamo_static_input_type": "unguarded"}
        rows.append(row)
    return rows


def _add_state_inputs(graph: fx.Graph, regions: list[Region], settings: TaylorSeerOptions,
                      last_input: fx.Node) -> _StateInputs:
    """Add the table rows, then `ts_scalars`, then `ts_compute` after `last_input`."""
    with graph.inserting_after(last_input):
        # Inserted in reverse: each goes right after the last original placeholder.
        pred = graph.placeholder("ts_compute")
        scalars = graph.placeholder("ts_scalars")
        # Mutated (its counters), so it must be a static input too for CUDA graphs to keep it.
        scalars.meta["tensor_dict"] = {"_dynamo_static_input_type": "unguarded"}
        tables, specs = [], []
        for r, region in enumerate(regions):
            tables.append([])
            for k, out in enumerate(region.outputs):
                if region.live[k]:
                    tables[-1].append(_table_rows(graph, out, f"ts_table_{r}_{k}", settings))
                    value = example_value(out)
                    specs.append(TableSpec(region.name, k, out.name, tuple(value.shape),
                                           value.dtype))
    # Placeholders were inserted in reverse order; put them back in a stable order.
    anchor = last_input
    for node in [row for ts in tables for rows in ts for row in rows] + [scalars, pred]:
        anchor.append(node)
        anchor = node
    return _StateInputs(tables, scalars, pred, specs)


def _guard_region(gm: fx.GraphModule, r: int, region: Region, state: _StateInputs,
                  order: int) -> tuple[fx.Node, list[fx.Node]]:
    """Replace region `r` by `cond(ts_compute, ts_compute_r, ts_forecast_r, operands)` and one
    getitem per output; returns the cond and the getitems (in output order)."""
    graph = gm.graph
    members = set(region.nodes)
    rows = [row for per_output in state.tables[r] for row in per_output]
    true_name, false_name = f"ts_compute_{r}", f"ts_forecast_{r}"
    gm.add_submodule(true_name, _branch(gm, region, state.tables[r], state.scalars, True, order))
    gm.add_submodule(false_name, _branch(gm, region, state.tables[r], state.scalars, False, order))
    with graph.inserting_after(region.nodes[-1]):
        true_attr = graph.get_attr(true_name)
    with graph.inserting_after(true_attr):
        false_attr = graph.get_attr(false_name)
    with graph.inserting_after(false_attr):
        operands = tuple([*region.inputs, *rows, state.scalars])
        cond = graph.call_function(torch.ops.higher_order.cond,
                                   (state.pred, true_attr, false_attr, operands))
        cond.meta["ts_region"] = region.name
        cond.meta["example_value"] = tuple(example_value(o) for o in region.outputs)
    items, anchor = [], cond
    for k, out in enumerate(region.outputs):
        with graph.inserting_after(anchor):
            item = graph.call_function(operator.getitem, (cond, k))
        item.meta = {"example_value": example_value(out), "ts_region": region.name}
        out.replace_all_uses_with(item, delete_user_cb=lambda user: user not in members)
        items.append(item)
        anchor = item
    for node in reversed(region.nodes):
        graph.erase_node(node)
    return cond, items


def _guard_regions(gm: fx.GraphModule, regions: list[Region], state: _StateInputs,
                   order: int) -> dict[fx.Node, fx.Node]:
    """Guard every region in turn; returns region node -> the cond that replaced it."""
    replaced: dict[fx.Node, fx.Node] = {}  # outputs of earlier regions -> their getitem
    cond_of: dict[fx.Node, fx.Node] = {}
    for r, region in enumerate(regions):
        region.inputs = [replaced.get(v, v) for v in region.inputs]
        outputs = list(region.outputs)
        cond, items = _guard_region(gm, r, region, state, order)
        cond_of.update(dict.fromkeys(region.nodes, cond))
        replaced.update(zip(outputs, items))
    return cond_of


def _order_around_conds(must_follow: dict[fx.Node, set[fx.Node]],
                        cond_of: dict[fx.Node, fx.Node]) -> dict[fx.Node, set[fx.Node]]:
    """`write_order`'s constraints with each region's nodes standing for its cond."""
    order = defaultdict(set)
    for node, firsts in must_follow.items():
        node = cond_of.get(node, node)
        order[node] |= {cond_of.get(first, first) for first in firsts} - {node}
    return order


def insert_guards(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """Replace each region by torch.cond(compute: region + table update, else: forecast).

    New inputs after the original ones: the table rows, `ts_scalars`, `ts_compute`; where they
    are goes to ``gm.meta["ts_guards"]``."""
    regions: list[Region] = gm.meta[REGIONS_KEY]
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    nodes_before = len(graph.nodes)
    state = _add_state_inputs(graph, regions, settings, placeholders[-1])
    # Which reads and writes of a written storage must stay on which side of the write; a
    # region's nodes will be represented by its cond.
    must_follow = write_order(graph)
    cond_of = _guard_regions(gm, regions, state, settings.order)
    # Outside nodes that read a region's output but sat between its nodes must now follow the
    # cond; nothing else moves (an in-place write and the reads around it keep their order).
    stable_topological_sort(graph, _order_around_conds(must_follow, cond_of))
    graph.lint()
    gm.recompile()
    gm.meta[GUARDS_KEY] = GuardInfo(
        num_user_inputs=len(placeholders), tables=state.specs,
        region_names=[r.name for r in regions],
        outputs_per_region=[len(r.outputs) for r in regions])
    report(gm, log, "insert_guards: %d regions guarded, %d tables (%d row inputs); %d nodes "
           "moved into the branches, graph %d -> %d nodes", len(regions), len(state.specs),
           sum(len(rows) for ts in state.tables for rows in ts),
           sum(len(r.nodes) for r in regions), nodes_before, len(graph.nodes))
    return gm
