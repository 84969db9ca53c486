"""In-place writes before, between and after the blocks survive the rewrite, in their order.

The passes cut regions out of Dynamo's torch-level graph, delete what a forecast step does not
need and re-sort what they moved. An in-place write (``x[i] = v``, ``copy_``, ``masked_fill_``,
``+=``, a write through a view, a write into a user's input) has no data users, so a pure
dead-code elimination drops it, and a data-dependency sort moves reads ahead of it. Hypothesis
places such writes anywhere around the blocks; a computed step must still equal the model and
every step the independent reference.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ts_compile
from ts_compile.api import controller_of
from ts_compile.analysis.side_effects import live_nodes, write_order, written_values
from ts_compile.passes._surgery import stable_topological_sort

from .conftest import compile_ts
from .reference import EagerTaylorSeer, official_schedule

KINDS = ("setitem", "copy_", "masked_fill_", "index_put", "iadd", "view_write", "input_write")
PLACES = ("pre", "between", "post")
TARGETS = ("side", "stream")


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return x + self.mlp(x) * torch.cos(t)


def _write(kind: str, target: torch.Tensor, stream: torch.Tensor, x: torch.Tensor) -> None:
    """One in-place write into `target` (reading `stream`), as users write them."""
    if kind == "setitem":
        target[:, :2] = target[:, 1:3] * 0.5 + 0.1
    elif kind == "copy_":
        target.copy_(torch.tanh(stream) * 0.3 + target * 0.5)
    elif kind == "masked_fill_":
        target.masked_fill_(target > 0.4, 0.4)
    elif kind == "index_put":
        target[:, torch.tensor([0, 2])] = stream[:, :2] * 0.25
    elif kind == "iadd":
        target += 0.1 * stream
    elif kind == "view_write":
        target[..., :3].mul_(0.5)
    elif kind == "input_write":
        x.clamp_(-3.0, 3.0)  # the caller's tensor: observable after the call
    else:
        raise ValueError(kind)


class WritesModel(nn.Module):
    """pre -> blocks -> post, with in-place writes at the places `writes` lists."""

    def __init__(self, writes: tuple[tuple[str, str, str], ...], width: int = 8,
                 blocks: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.writes = writes
        self.pre = nn.Linear(width, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.post = nn.Linear(width, width)

    def _apply(self, place: str, h, side, x) -> None:
        for kind, where, target in self.writes:
            if where == place:
                _write(kind, side if target == "side" else h, h, x)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        side = torch.zeros_like(h)
        self._apply("pre", h, side, x)
        for i, block in enumerate(self.blocks):
            h = block(h + side, t)
            if i < len(self.blocks) - 1:
                self._apply("between", h, side, x)
        self._apply("post", h, side, x)
        return self.post(h) + side


writes_strategy = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(PLACES),
                                     st.sampled_from(TARGETS)), min_size=1, max_size=4)


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 5, 8, generator=generator)


def _time(step: int, steps: int) -> torch.Tensor:
    return torch.tensor(1.0 - step / steps)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=writes_strategy)
def test_all_compute_schedule_equals_the_model(writes):
    model = WritesModel(tuple(writes)).eval()
    compiled = compile_ts(model, order=2, schedule=range(4))
    x_model, x_compiled = _inputs(), _inputs()
    with torch.no_grad():
        for step in range(4):
            expected = model(x_model, _time(step, 4))
            torch.testing.assert_close(compiled(x_compiled, _time(step, 4)), expected,
                                       rtol=0, atol=0, msg=lambda m: f"step {step}: {m}")
            # A write into the caller's tensor happens in both.
            torch.testing.assert_close(x_compiled, x_model, rtol=0, atol=0)
    torch._dynamo.reset()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=writes_strategy, order=st.integers(0, 3))
def test_every_step_matches_the_reference(writes, order):
    model = WritesModel(tuple(writes)).eval()
    steps = 8
    compiled = compile_ts(model, order=order, interval=3, warmup=1)
    reference = EagerTaylorSeer(model, [f"blocks.{i}" for i in range(3)], order,
                                official_schedule(1, 3))
    x_ref, x_compiled = _inputs(), _inputs()
    with torch.no_grad():
        for step in range(steps):
            expected = reference(x_ref, _time(step, steps))
            torch.testing.assert_close(compiled(x_compiled, _time(step, steps)), expected,
                                       rtol=1e-5, atol=1e-5, msg=lambda m: f"step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["forecast_steps"] == sum(not official_schedule(1, 3)(s) for s in range(steps))
    assert stats["fallbacks"] == [] and stats["skipped_regions"] == []
    torch._dynamo.reset()


def _forecast_graph(compiled) -> fx.GraphModule:
    (runtime,) = controller_of(compiled).runtimes
    return runtime.graphs.forecast


def _writes_in(gm: fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if written_values(n)]


def test_a_write_only_the_blocks_read_is_not_run_on_forecast_steps():
    model = WritesModel((("setitem", "pre", "side"),)).eval()
    compiled = compile_ts(model, order=1)
    with torch.no_grad():
        compiled(_inputs(), _time(0, 4))
    # `side` is read after the blocks too (`post(h) + side`), so the write stays...
    assert any("setitem" in name for name in _writes_in(_forecast_graph(compiled)))

    class OnlyBlocksRead(WritesModel):
        def forward(self, x, t):
            h = self.pre(x)
            side = torch.zeros_like(h)
            side[:, :2] = h[:, :2] * 3
            for block in self.blocks:
                h = block(h + side, t)
            return self.post(h)

    torch._dynamo.reset()
    compiled = compile_ts(OnlyBlocksRead(()).eval(), order=1)
    with torch.no_grad():
        compiled(_inputs(), _time(0, 4))
    # ...but here only the blocks read it: on a forecast step it is dead work.
    assert not any("setitem" in name for name in _writes_in(_forecast_graph(compiled)))


def test_a_write_into_the_callers_tensor_is_kept_on_forecast_steps():
    compiled = compile_ts(WritesModel((("input_write", "pre", "side"),)).eval(), order=1)
    with torch.no_grad():
        compiled(_inputs(), _time(0, 4))
    assert any("clamp_" in name for name in _writes_in(_forecast_graph(compiled)))


def _graph_with_a_write() -> tuple[fx.GraphModule, dict[str, fx.Node]]:
    """x -> buf = zeros_like(x); buf[:2] = x[:2]; y = buf * 2; return y, traced (fake values)."""
    def f(x):
        buf = torch.zeros_like(x)
        buf[:2] = x[:2]
        return buf * 2

    captured = {}

    def backend(gm, example_inputs, **_):
        captured["gm"] = gm
        return gm

    torch.compile(f, backend=backend, fullgraph=True)(torch.randn(4))
    gm = captured["gm"]
    return gm, {n.name: n for n in gm.graph.nodes}


def test_live_nodes_keeps_a_write_read_later_and_drops_it_when_only_opaque_nodes_read():
    gm, nodes = _graph_with_a_write()
    (write,) = [n for n in gm.graph.nodes if n.target is operator.setitem]
    assert write in live_nodes(gm.graph)
    (reader,) = [n for n in gm.graph.nodes if n.target is operator.mul]
    # With the only reader opaque (a region on a forecast step), the write is dead.
    assert write not in live_nodes(gm.graph, opaque={reader})


def test_stable_sort_keeps_a_valid_order_and_only_delays_what_must_wait():
    gm, _ = _graph_with_a_write()
    before = [n.name for n in gm.graph.nodes]
    constraints = write_order(gm.graph)  # taken before the order is disturbed
    stable_topological_sort(gm.graph, constraints)
    assert [n.name for n in gm.graph.nodes] == before
    # Move the reader of the written buffer to the front: it must come back after its inputs,
    # and the write must stay ahead of it (it was before it in the original order).
    (reader,) = [n for n in gm.graph.nodes if n.target is operator.mul]
    first_placeholder = next(iter(gm.graph.nodes))
    first_placeholder.append(reader)
    stable_topological_sort(gm.graph, constraints)
    gm.graph.lint()
    assert [n.name for n in gm.graph.nodes] == before
    # Data dependencies alone would put the read before the write.
    first_placeholder.append(reader)
    stable_topological_sort(gm.graph)
    assert [n.name for n in gm.graph.nodes] != before


@pytest.mark.inductor
def test_writes_through_inductor_match_the_model():
    writes = (("setitem", "pre", "side"), ("masked_fill_", "between", "stream"),
              ("iadd", "between", "side"), ("view_write", "post", "stream"))
    model = WritesModel(writes).eval()
    compiled = compile_ts(model, order=2, schedule=range(3), compiler="inductor")
    with torch.no_grad():
        for step in range(3):
            torch.testing.assert_close(compiled(_inputs(), _time(step, 3)),
                                       model(_inputs(), _time(step, 3)), rtol=1e-5, atol=1e-5)


def test_python_operators_ending_in_underscore_are_not_writes():
    """`operator.and_`/`or_`/`not_` end in "_" like in-place methods but write nothing (a block
    combining masks with `&` was refused as writing outside storage: RFD4-Proteina)."""
    captured = {}

    def backend(gm, example_inputs, **_):
        captured["gm"] = gm
        return gm

    def f(a, b, x):
        y = x.clone()
        y.add_(1)
        return (a & b) | a, y

    torch.compile(f, backend=backend, fullgraph=True)(
        torch.tensor([True, False]), torch.tensor([True, True]), torch.zeros(2))
    writes = {n.target for n in captured["gm"].graph.nodes if written_values(n)}
    assert writes == {"add_"}
