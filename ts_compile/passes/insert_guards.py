"""Pass 3: rewrite each region into a guarded branch (`torch.cond` form).

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
`ts_compile.explain` prints and the property tests check; `specialize_guards` resolves it.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections import defaultdict

import torch
import torch.fx as fx

from ..options import TaylorSeerOptions
from ..taylor import checked_forecast, counted_nonfinite, nonfinite_slots, updated_table
from .regions import REGIONS_KEY, Region, example_value
from .side_effects import stable_topological_sort, write_order

log = logging.getLogger(__name__)

GUARDS_KEY = "ts_guards"
COND_ONLY = "ts_cond_only"  # meta flag: node exists to satisfy cond's aliasing rules only


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
            raise NotImplementedError(f"cannot express dynamic size {size} of a dead output")
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


def insert_guards(gm: fx.GraphModule, settings: TaylorSeerOptions) -> fx.GraphModule:
    """Replace every region of ``gm.meta["ts_regions"]`` by a `torch.cond` over new inputs."""
    regions: list[Region] = gm.meta[REGIONS_KEY]
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    state_dtype = settings.torch_state_dtype
    specs: list[TableSpec] = []

    with graph.inserting_after(placeholders[-1]):
        # Inserted in reverse: each goes right after the last original placeholder.
        pred = graph.placeholder("ts_compute")
        scalars = graph.placeholder("ts_scalars")
        # Mutated (its counters), so it must be a static input too for CUDA graphs to keep it.
        scalars.meta["tensor_dict"] = {"_dynamo_static_input_type": "unguarded"}
        table_nodes: list[list[list[fx.Node]]] = []  # region -> live output -> rows
        for r, region in enumerate(regions):
            table_nodes.append([])
            for k, out in enumerate(region.outputs):
                if region.live[k]:
                    value = example_value(out)
                    rows = []
                    for i in range(settings.order + 1):
                        row = graph.placeholder(f"ts_table_{r}_{k}_{i}")
                        row.meta["example_value"] = _fake_like(value, value.shape, state_dtype)
                        # Static address for CUDA graphs: the runtime owns these for good.
                        row.meta["tensor_dict"] = {"_dynamo_static_input_type": "unguarded"}
                        rows.append(row)
                    table_nodes[-1].append(rows)
                    specs.append(TableSpec(region.name, k, out.name, tuple(value.shape), value.dtype))
    # Placeholders were inserted in reverse order; put them back in a stable order.
    new_placeholders = [row for ts in table_nodes for rows in ts for row in rows] + [scalars, pred]
    anchor = placeholders[-1]
    for node in new_placeholders:
        anchor.append(node)
        anchor = node

    # Which reads and writes of a written storage must stay on which side of the write; a
    # region's nodes will be represented by its cond.
    must_follow = write_order(graph)
    replaced: dict[fx.Node, fx.Node] = {}  # outputs of earlier regions -> their getitem
    cond_of: dict[fx.Node, fx.Node] = {}  # region node -> the cond that replaces it
    for r, region in enumerate(regions):
        members = set(region.nodes)
        region.inputs = [replaced.get(v, v) for v in region.inputs]
        true_gm = _branch(gm, region, table_nodes[r], scalars, compute=True, order=settings.order)
        false_gm = _branch(gm, region, table_nodes[r], scalars, compute=False,
                           order=settings.order)
        true_name, false_name = f"ts_compute_{r}", f"ts_forecast_{r}"
        gm.add_submodule(true_name, true_gm)
        gm.add_submodule(false_name, false_gm)
        with graph.inserting_after(region.nodes[-1]):
            true_attr = graph.get_attr(true_name)
        with graph.inserting_after(true_attr):
            false_attr = graph.get_attr(false_name)
        with graph.inserting_after(false_attr):
            operands = tuple([*region.inputs, *(row for rows in table_nodes[r] for row in rows),
                              scalars])
            cond = graph.call_function(torch.ops.higher_order.cond,
                                       (pred, true_attr, false_attr, operands))
            cond.meta["ts_region"] = region.name
            cond.meta["example_value"] = tuple(example_value(o) for o in region.outputs)
        cond_of.update(dict.fromkeys(region.nodes, cond))
        anchor = cond
        for k, out in enumerate(region.outputs):
            with graph.inserting_after(anchor):
                item = graph.call_function(operator.getitem, (cond, k))
            item.meta = {"example_value": example_value(out), "ts_region": region.name}
            out.replace_all_uses_with(item, delete_user_cb=lambda user: user not in members)
            replaced[out] = item
            anchor = item
        for node in reversed(region.nodes):
            graph.erase_node(node)

    # Outside nodes that read a region's output but sat between its nodes must now follow the
    # cond; nothing else moves (an in-place write and the reads around it keep their order).
    order = defaultdict(set)
    for node, firsts in must_follow.items():
        node = cond_of.get(node, node)
        order[node] |= {cond_of.get(first, first) for first in firsts} - {node}
    stable_topological_sort(gm.graph, order)
    gm.graph.lint()
    gm.recompile()
    gm.meta[GUARDS_KEY] = GuardInfo(
        num_user_inputs=len(placeholders), tables=specs,
        region_names=[r.name for r in regions],
        outputs_per_region=[len(r.outputs) for r in regions])
    log.info("insert_guards: %d regions guarded, %d tables", len(regions), len(specs))
    return gm
