"""The pass contract: the list `build_graphs` runs, what each pass logs, where `NotApplicable` is
decided, and the branch-taking passes leaving the guarded graph as it is."""

import logging

import pytest
import torch
import torch.fx as fx

from ts_compile.analysis.regions import Region
from ts_compile.options import TaylorSeerOptions
from ts_compile.passes import (NotApplicable, all_passes, build_graphs, declared_block_lists,
                               find_regions, mark_live_outputs, take_compute_branches,
                               take_forecast_branches)
from ts_compile.passes._contract import REGIONS_KEY

from .models import ModelSpec, build_model, make_inputs
from .test_properties import capture


def _dynamo_graph(spec=ModelSpec(width=8, lists=(3, 2))):
    model = build_model(spec)
    gm, _ = capture(model, make_inputs(spec), torch.tensor(0.25))
    return model, gm


def test_build_graphs_runs_the_listed_passes_in_order_each_logging_what_it_did(caplog):
    model, gm = _dynamo_graph()
    with caplog.at_level(logging.INFO, logger="ts_compile"):
        graphs = build_graphs(gm, TaylorSeerOptions(order=2), declared_block_lists(model))
    said = [r.getMessage() for r in caplog.records if r.name.startswith("ts_compile.passes")]
    assert [line.split(":")[0] for line in said] == [p.__name__ for p in all_passes()], said
    assert graphs.reports == said  # what ts_compile.explain prints
    assert "find_regions: 5 regions" in said[1]
    assert said[2].startswith("mark_live_outputs: 1 of 5 region outputs are live")
    assert said[3].startswith("insert_guards: 5 regions guarded, 1 tables (3 row inputs)")
    assert "5 guards resolved" in said[4] and "5 guards resolved" in said[5]


def test_find_regions_decides_when_there_are_no_blocks():
    class NoBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x, t):
            return self.proj(x) * t

    gm, _ = capture(NoBlocks(), torch.randn(2, 3, 8), torch.tensor(0.5))
    with pytest.raises(NotApplicable, match=r"found no transformer blocks"):
        find_regions(gm, TaylorSeerOptions())
    with pytest.raises(NotApplicable, match=r"no module path matching cut=\['nothing'\]"):
        find_regions(gm, TaylorSeerOptions(cut=["nothing"]))


def test_mark_live_outputs_decides_when_no_output_is_read():
    def f(x):
        y = x.sin()  # the region
        y.cos()  # read outside, but by nothing that reaches the output
        return x

    gm = fx.symbolic_trace(f)
    x, y = list(gm.graph.nodes)[:2]
    gm.meta[REGIONS_KEY] = [Region("blocks.0", "Block", [y], [x], [y])]
    with pytest.raises(NotApplicable, match="no region output reaches the graph's output"):
        mark_live_outputs(gm, TaylorSeerOptions())


def test_the_branch_passes_leave_the_guarded_graph_as_it_is():
    model, gm = _dynamo_graph()
    graphs = build_graphs(gm, TaylorSeerOptions(order=1), declared_block_lists(model))
    before = graphs.guarded.code
    conds = [n for n in graphs.guarded.graph.nodes if n.target is torch.ops.higher_order.cond]
    for take in (take_compute_branches, take_forecast_branches):
        taken = take(graphs.guarded, TaylorSeerOptions(order=1))
        assert taken is not graphs.guarded
        assert not any(n.target is torch.ops.higher_order.cond for n in taken.graph.nodes)
    assert graphs.guarded.code == before and len(conds) == 5
