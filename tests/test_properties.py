"""Property-based checks (hypothesis) over randomly generated block-structured models."""

import torch
import torch.fx as fx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import ts_compile
from ts_compile.options import TaylorSeerOptions
from ts_compile.passes import build_graphs, declared_block_lists
from ts_compile.analysis.regions import module_stack
from ts_compile.taylor import compute_step_scalars, forecast_step_scalars, scalars_vector

from .conftest import compile_ts
from .models import block_models, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

# No shrinking: every example compiles, and a failing example is small enough to read as it is.
PROPERTY = settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def capture(model, *args):
    """The graph Dynamo hands a backend, with its example inputs."""
    seen = {}

    def backend(gm, example_inputs, **_):
        seen.update(gm=gm, inputs=list(example_inputs))
        return gm

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend, fullgraph=True)(*args)
    return seen["gm"], seen["inputs"]


def inputs_by_name(gm, user_inputs, extra):
    names = [n.name for n in gm.graph.find_nodes(op="placeholder")]
    values = list(user_inputs) + [extra[name] for name in names[len(user_inputs):]]
    assert len(values) == len(names)
    return values


class CondRecorder(fx.Interpreter):
    """Runs the guarded graph and records each cond's operands."""

    def __init__(self, gm):
        super().__init__(gm)
        self.conds = []

    def call_function(self, target, args, kwargs):
        if target is torch.ops.higher_order.cond:
            self.conds.append((args[1], args[2], [a.clone() for a in args[3]]))
        return super().call_function(target, args, kwargs)


@PROPERTY
@given(spec=block_models(), order=st.integers(0, 4), interval=st.integers(1, 5),
       warmup=st.integers(1, 3))
def test_random_models_match_reference(spec, order, interval, warmup):
    torch._dynamo.reset()
    model = build_model(spec)
    x = make_inputs(spec)
    compiled = compile_ts(model, order=order, interval=interval, warmup=warmup)
    reference = EagerTaylorSeer(model, block_paths(spec), order, official_schedule(warmup, interval))
    with torch.no_grad():
        for step in range(12):
            t = torch.tensor(1.0 - step / 12)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5)


@PROPERTY
@given(spec=block_models(), order=st.integers(0, 4))
def test_rewritten_graphs_are_well_formed(spec, order):
    model = build_model(spec)
    x, t = make_inputs(spec), torch.tensor(0.25)
    gm, user_inputs = capture(model, x, t)
    graphs = build_graphs(gm, TaylorSeerOptions(order=order), declared_block_lists(model))
    paths = block_paths(spec)

    # Regions: exactly the blocks. Live outputs: only the last block's.
    assert [r.name for r in graphs.regions] == paths
    tables = graphs.guards.tables
    assert tables and {spec.region for spec in tables} == {paths[-1]}

    # The guarded graph is a valid graph; the forecast graph holds no op of any region.
    graphs.guarded.graph.lint()
    for node in graphs.forecast.graph.nodes:
        if node.op != "placeholder":  # parameters carry their module's stack; they stay inputs
            assert not {p for _, p, _ in module_stack(node)} & set(paths), node.format_node()
    assert any(n.target is torch.ops.aten.copy_.default for n in graphs.compute.graph.nodes)

    # One table of (order + 1) rows per live output, each row an input of the output's shape.
    table_nodes = [n for n in graphs.guarded.graph.find_nodes(op="placeholder")
                   if n.name.startswith("ts_table_")]
    assert len(table_nodes) == (order + 1) * len(tables)
    state = {}
    for index, node in enumerate(table_nodes):
        shape = tuple(int(d) for d in node.meta["example_value"].shape)
        assert shape == tuple(tables[index // (order + 1)].shape)
        state[node.name] = torch.zeros(shape)

    # Compute step: guarded(pred=True) == compute graph == the model, and both branches of every
    # cond agree in output metadata.
    scalars = scalars_vector(compute_step_scalars(order, 0, 0))
    extra = dict(state, ts_scalars=scalars, ts_compute=torch.tensor(True))
    with torch.no_grad():
        recorder = CondRecorder(graphs.guarded)
        guarded_out = recorder.run(*inputs_by_name(graphs.guarded, user_inputs, extra))
        assert len(recorder.conds) == len(paths)
        for true_gm, false_gm, operands in recorder.conds:
            a = true_gm(*[o.clone() for o in operands])
            b = false_gm(*[o.clone() for o in operands])
            assert [(o.shape, o.dtype, o.stride()) for o in a] == \
                   [(o.shape, o.dtype, o.stride()) for o in b]
        fresh = {k: torch.zeros_like(v) for k, v in state.items()}
        compute_out = graphs.compute(*inputs_by_name(
            graphs.compute, user_inputs, dict(fresh, ts_scalars=scalars)))
    expected = model(x, t)
    torch.testing.assert_close(guarded_out[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(compute_out[0], expected, rtol=0, atol=0)
    for name in state:  # both paths wrote the same tables
        torch.testing.assert_close(state[name], fresh[name], rtol=0, atol=0)

    # Forecast step: guarded(pred=False) == forecast graph.
    scalars = scalars_vector(forecast_step_scalars(order, 2, 1))
    extra = dict(state, ts_scalars=scalars, ts_compute=torch.tensor(False))
    with torch.no_grad():
        guarded_out = graphs.guarded(*inputs_by_name(graphs.guarded, user_inputs, extra))
        forecast_out = graphs.forecast(*inputs_by_name(
            graphs.forecast, user_inputs, dict(state, ts_scalars=scalars)))
    torch.testing.assert_close(guarded_out[0], forecast_out[0], rtol=0, atol=0)


@PROPERTY
@given(spec=block_models(), order=st.integers(0, 4))
def test_all_compute_equals_uncompiled(spec, order):
    torch._dynamo.reset()
    model = build_model(spec)
    x = make_inputs(spec)
    compiled = compile_ts(model, order=order, schedule=range(6))
    with torch.no_grad():
        for step in range(6):
            t = torch.tensor(step / 6)
            torch.testing.assert_close(compiled(x, t), model(x, t), rtol=0, atol=0)
    assert ts_compile.stats(compiled)["forecast_steps"] == 0


def test_module_paths_normalise_from_every_dynamo_spelling():
    from ts_compile.passes import normalize_module_path

    assert normalize_module_path("L['self'].blocks.1.norm") == "blocks.1.norm"
    assert normalize_module_path(
        "L['self'].__dict__['_modules']['transformer_blocks'].0") == "transformer_blocks.0"
    assert normalize_module_path(  # diffusers' hooks wrap forward
        "L['function_reference'].forward.__self__.__dict__['_modules']"
        "['single_transformer_blocks'].3.attn") == "single_transformer_blocks.3.attn"
    assert normalize_module_path("L['fn']._modules['2']") == "2"  # the root is itself a list
