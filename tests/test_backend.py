"""The compiled model against the independent eager reference, step by step (eager inner compiler)."""

import types
import warnings

import pytest
import torch
import torch.nn as nn

import ts_compile
from ts_compile.api import controller_of

from .conftest import compile_ts
from .models import ModelSpec, PolyModel, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SCHEDULES = [(3, 2), (5, 3), (4, 1), (2, 4)]  # (interval, warmup)
TENSOR_OUT = ModelSpec(width=8, lists=(3, 2), pre_op=True, between_op=True, post_op=True, seed=1)
TUPLE_OUT = ModelSpec(width=8, lists=(2, 3), tuple_out=True, post_op=True, seed=2)


def run_against_reference(spec, order, interval, warmup, steps=14, generations=2, **extra):
    model = build_model(spec)
    x = make_inputs(spec)
    compiled = compile_ts(model, order=order, interval=interval, warmup=warmup, **extra)
    reference = EagerTaylorSeer(model, block_paths(spec), order, official_schedule(warmup, interval))
    with torch.no_grad():
        for _ in range(generations):
            for step in range(steps):
                t = torch.tensor(1.0 - step / steps)
                torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5,
                                           msg=lambda m: f"step {step}: {m}")
            ts_compile.reset(compiled)
            reference.reset()
    return compiled


@pytest.mark.parametrize("order", range(5))
@pytest.mark.parametrize("interval, warmup", SCHEDULES)
@pytest.mark.parametrize("spec", [TENSOR_OUT, TUPLE_OUT], ids=["tensor", "tuple"])
def test_matches_reference_every_step(spec, order, interval, warmup):
    compiled = run_against_reference(spec, order, interval, warmup)
    stats = ts_compile.stats(compiled)
    expected_computed = sum(official_schedule(warmup, interval)(s) for s in range(14))
    assert stats["computed_steps"] == 2 * expected_computed
    assert stats["forecast_steps"] == 2 * (14 - expected_computed)


@pytest.mark.usefixtures("backend_form")
def test_all_compute_schedule_reproduces_uncompiled_model():
    model = build_model(TUPLE_OUT)
    x = make_inputs(TUPLE_OUT)
    compiled = compile_ts(model, order=3, schedule=range(10))
    with torch.no_grad():
        for step in range(10):
            t = torch.tensor(float(step))
            torch.testing.assert_close(compiled(x, t), model(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("degree", [0, 1])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_linear_trajectories_are_forecast_exactly(degree, order):
    # With the official lagged-difference recursion, constant and linear trajectories are exact
    # for any order >= degree; quadratics are not (see docs/design.md).
    model = PolyModel(degree, width=8, n_blocks=3).eval()
    x = torch.randn(2, 3, 8)
    compiled = compile_ts(model, order=order, interval=4, warmup=2)
    with torch.no_grad():
        for step in range(16):
            t = torch.tensor(float(step))
            torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-4, atol=1e-4)
    assert ts_compile.stats(compiled)["forecast_steps"] > 0


@pytest.mark.usefixtures("backend_form")
def test_num_steps_resets_state_by_itself():
    model = build_model(TENSOR_OUT)
    x = make_inputs(TENSOR_OUT)
    compiled = compile_ts(model, order=2, interval=3, warmup=2, num_steps=8)
    with torch.no_grad():
        first = [compiled(x, torch.tensor(s / 8)) for s in range(8)]
        second = [compiled(x, torch.tensor(s / 8)) for s in range(8)]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_first_call_computes_even_if_schedule_says_forecast():
    model = build_model(TENSOR_OUT)
    x = make_inputs(TENSOR_OUT)
    compiled = compile_ts(model, order=1, interval=4, warmup=1)
    with torch.no_grad():
        compiled(x, torch.tensor(0.0))  # compile; step 0 computed
        ts_compile.reset(compiled)
        # A pipeline joining mid-schedule: its step index 6 is a forecast step.
        controller_of(compiled).set_context(types.SimpleNamespace(name="default", step_index=6))
        out = compiled(x, torch.tensor(0.3))
    assert controller_of(compiled).lane().step == 6
    torch.testing.assert_close(out, model(x, torch.tensor(0.3)))
    assert ts_compile.stats(compiled)["computed_steps"] == 2


@pytest.mark.usefixtures("backend_form")
def test_two_compiled_copies_of_one_model_keep_separate_state():
    model = build_model(TENSOR_OUT)
    x = make_inputs(TENSOR_OUT)
    opts = dict(order=2, interval=3, warmup=1)
    first, second = compile_ts(model, **opts), compile_ts(model, **opts)
    ref_first = EagerTaylorSeer(model, block_paths(TENSOR_OUT), 2, official_schedule(1, 3))
    ref_second = EagerTaylorSeer(model, block_paths(TENSOR_OUT), 2, official_schedule(1, 3))
    with torch.no_grad():
        for step in range(9):
            t1, t2 = torch.tensor(step / 9), torch.tensor(1 - step / 9)
            torch.testing.assert_close(first(x, t1), ref_first(x, t1))
            if step % 2 == 0:  # the second copy runs at its own pace
                torch.testing.assert_close(second(x, t2), ref_second(x, t2))
    assert ts_compile.stats(first)["computed_steps"] + ts_compile.stats(first)["forecast_steps"] == 9
    assert ts_compile.stats(second)["computed_steps"] + ts_compile.stats(second)["forecast_steps"] == 5


def test_state_memory_is_order_plus_one_times_live_outputs():
    spec = ModelSpec(width=16, lists=(4,), tuple_out=True)
    model = build_model(spec)
    x = make_inputs(spec, batch=2, tokens=5)
    compiled = compile_ts(model, order=3)
    with torch.no_grad():
        compiled(x, torch.tensor(0.0))
    stats = ts_compile.stats(compiled)
    assert stats["live_outputs"] == 2  # the last block's (x, aux); the chain inside needs none
    assert stats["state_bytes"] == (3 + 1) * 2 * (2 * 5 * 16) * 4


@pytest.mark.usefixtures("backend_form")
def test_no_recompiles_or_graph_breaks_over_three_generations():
    from torch._dynamo.utils import counters

    counters.clear()
    model = build_model(TUPLE_OUT)
    x = make_inputs(TUPLE_OUT)
    compiled = compile_ts(model, order=2, interval=4, warmup=2, fullgraph=False)
    with torch.no_grad():
        compiled(x, torch.tensor(0.0))
        ts_compile.reset(compiled)
        with torch.compiler.set_stance("fail_on_recompile"):
            for _ in range(3):
                for step in range(20):
                    compiled(x, torch.tensor(1 - step / 20))
                ts_compile.reset(compiled)
    stats = ts_compile.stats(compiled)
    assert stats["graphs"] == 1 and stats["recompiles"] == 0
    assert stats["computed_steps"] + stats["forecast_steps"] == 61
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.usefixtures("backend_form")
def test_grad_enabled_falls_back_to_plain_compile_with_one_warning():
    model = build_model(TENSOR_OUT)
    x = make_inputs(TENSOR_OUT)
    compiled = compile_ts(model, order=2)
    with pytest.warns(UserWarning, match="grad is enabled") as record:
        outs = [compiled(x, torch.tensor(s / 4)) for s in range(4)]
    assert len([w for w in record if "ts_compile" in str(w.message)]) == 1
    for s, out in enumerate(outs):
        torch.testing.assert_close(out, model(x, torch.tensor(s / 4)))
    assert "grad is enabled" in ts_compile.stats(compiled)["fallbacks"][0]


@pytest.mark.usefixtures("backend_form")
def test_no_blocks_falls_back_to_plain_compile():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 3))
    compiled = compile_ts(model)
    x = torch.randn(2, 4)
    with torch.no_grad(), pytest.warns(UserWarning, match="no transformer blocks"):
        out = compiled(x)
    torch.testing.assert_close(out, model(x))


def test_cut_patterns_select_submodules():
    spec = ModelSpec(width=8, lists=(3,), seed=4)
    model = build_model(spec)
    x = make_inputs(spec)
    paths = [f"blocks0.{i}.fc2" for i in range(3)]
    compiled = compile_ts(model, order=2, interval=3, warmup=1, cut=[r"blocks0\.\d+\.fc2"])
    reference = EagerTaylorSeer(model, paths, 2, official_schedule(1, 3))
    with torch.no_grad():
        for step in range(10):
            t = torch.tensor(step / 10)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5)
    stats = ts_compile.stats(compiled)
    assert stats["regions"] == paths and stats["live_outputs"] == 3


@pytest.mark.usefixtures("backend_form")
def test_reset_and_stats_name_the_problem_for_wrong_objects():
    with pytest.raises(TypeError, match="pass the compiled object"):
        ts_compile.reset(nn.Linear(2, 2))
    compiled = compile_ts(build_model(TENSOR_OUT))
    ts_compile.reset(compiled)  # before the first call: nothing to reset, no error
    assert ts_compile.stats(compiled)["graphs"] == 0


def test_explain_and_stats_count_the_same_state_bytes():
    # one formula (calling.state_bytes) behind both, in the state dtype, not the model's
    spec = ModelSpec(width=16, lists=(4,), tuple_out=True)
    model = build_model(spec)
    x = make_inputs(spec, batch=2, tokens=5)
    options = {"order": 2, "state_dtype": "bfloat16"}
    (report,) = ts_compile.explain(model, x, torch.tensor(0.0), options=options)
    compiled = compile_ts(model, **options)
    with torch.no_grad():
        compiled(x, torch.tensor(0.0))
    assert ts_compile.stats(compiled)["state_bytes"] == report.state_bytes == 3 * 2 * (2 * 5 * 16) * 2


def test_explain_reports_regions_and_state_without_generation():
    spec = ModelSpec(width=8, lists=(2, 2), tuple_out=True)
    model = build_model(spec)
    (report,) = ts_compile.explain(model, make_inputs(spec), torch.tensor(0.5),
                                   options={"order": 1})
    assert report.regions == block_paths(spec)
    assert [(r, i) for r, i, _, _ in report.live_outputs] == [("blocks1.1", 0), ("blocks1.1", 1)]
    assert report.state_bytes == 2 * 2 * (2 * 3 * 8) * 4
    assert "torch.ops.higher_order.cond" in report.guarded_graph
    assert "blocks1.1[0]" in str(report)
    # What each pass did, in the order build_graphs runs them, with its own counts.
    from ts_compile.passes import all_passes

    assert [line.split(":")[0] for line in report.passes] == [p.__name__ for p in all_passes()]
    assert report.passes[1].startswith("find_regions: 4 regions (blocks0.0, blocks0.1, ")
    assert report.passes[2] == "mark_live_outputs: 2 of 8 region outputs are live"
    assert report.passes[3].startswith("insert_guards: 4 regions guarded, 2 tables (4 row inputs)")
    assert all(f"  {line}" in str(report) for line in report.passes)


def test_shape_changes_between_generations_never_reuse_state():
    # Resolution (tokens) and batch size change between generations. The second shape makes
    # Dynamo recompile with dynamic sizes; later ones reuse that graph with tables reallocated.
    spec = TUPLE_OUT
    model = build_model(spec)
    compiled = compile_ts(model, order=2, interval=3, warmup=1)
    reference = EagerTaylorSeer(model, block_paths(spec), 2, official_schedule(1, 3))
    with torch.no_grad():
        for batch, tokens in ((2, 3), (2, 5), (3, 7), (1, 3)):
            x = make_inputs(spec, batch=batch, tokens=tokens)
            for step in range(7):
                t = torch.tensor(1 - step / 7)
                torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5)
            ts_compile.reset(compiled)
            reference.reset()
    assert ts_compile.stats(compiled)["graphs"] >= 2  # batch 1 is its own graph (0/1 specialisation)


def test_shape_change_mid_generation_warns_and_recomputes():
    spec = TENSOR_OUT
    model = build_model(spec)
    compiled = compile_ts(model, order=1, interval=4, warmup=1, fullgraph=False)
    with torch.no_grad():
        for tokens in (3, 5):  # make the graph dynamic first
            compiled(make_inputs(spec, tokens=tokens), torch.tensor(0.0))
            ts_compile.reset(compiled)
        compiled(make_inputs(spec, tokens=5), torch.tensor(0.0))
        x = make_inputs(spec, tokens=6)
        with pytest.warns(UserWarning, match="changed in the middle of a generation"):
            out = compiled(x, torch.tensor(0.1))  # step 1 would be a forecast step
    torch.testing.assert_close(out, model(x, torch.tensor(0.1)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_keep_float32_state(dtype):
    spec = TUPLE_OUT
    model = build_model(spec).to(dtype)
    x = make_inputs(spec).to(dtype)
    compiled = compile_ts(model, order=2, interval=3, warmup=2)
    reference = EagerTaylorSeer(model, block_paths(spec), 2, official_schedule(2, 3))
    with torch.no_grad():
        for step in range(10):
            t = torch.tensor(1 - step / 10, dtype=dtype)
            got, want = compiled(x, t), reference(x, t)
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    runtime = controller_of(compiled).runtimes[0]
    assert all(table.dtype == torch.float32 for table in runtime.states["default"].tables)


def test_dtype_change_mid_generation_warns_and_recomputes():
    spec = TENSOR_OUT
    model = build_model(spec)
    x = make_inputs(spec)
    compiled = compile_ts(model, order=1, interval=4, warmup=1, fullgraph=False)
    with torch.no_grad():
        compiled(x, torch.tensor(0.0))  # step 0 computed; step 1 would be forecast
        model.to(torch.bfloat16)
        x16, t16 = x.to(torch.bfloat16), torch.tensor(0.1, dtype=torch.bfloat16)
        with pytest.warns(UserWarning, match="changed in the middle of a generation"):
            out = compiled(x16, t16)
    torch.testing.assert_close(out, model(x16, t16))
    assert ts_compile.stats(compiled)["forecast_steps"] == 0


# ------------------------------------------------------------------------------------------------
# the backend object (ts_compile.TaylorSeerBackend), the canonical form of backend="taylorseer"
# ------------------------------------------------------------------------------------------------
def test_backend_object_checks_its_options_when_made():
    with pytest.raises(ts_compile.OptionError, match="interval"):
        ts_compile.TaylorSeerBackend(interval=0)
    with pytest.raises(ts_compile.OptionError, match="unknown option 'intervall'"):
        ts_compile.TaylorSeerBackend({"intervall": 3})
    settings = ts_compile.TaylorSeerOptions(order=3, interval=4)
    assert ts_compile.TaylorSeerBackend(settings).options == settings
    assert ts_compile.TaylorSeerBackend(settings, interval=2).options.interval == 2
    assert ts_compile.TaylorSeerBackend(order=3, interval=4) == ts_compile.TaylorSeerBackend(settings)
    assert ts_compile.TaylorSeerBackend(order=3) != ts_compile.TaylorSeerBackend(order=2)
    beside = torch.compile(build_model(TENSOR_OUT), options={"interval": 3},
                           backend=ts_compile.TaylorSeerBackend(compiler="eager"))
    with torch.no_grad(), pytest.raises(ts_compile.OptionError, match="carries its own options"):
        beside(make_inputs(TENSOR_OUT), torch.tensor(1.0))


def test_backend_object_given_to_two_compile_calls_is_refused():
    # one object holds one controller: two models' generations would mix in it
    backend = ts_compile.TaylorSeerBackend(compiler="eager", interval=3)
    x = make_inputs(TENSOR_OUT)
    first = torch.compile(build_model(TENSOR_OUT), backend=backend, fullgraph=True)
    second = torch.compile(build_model(TENSOR_OUT), backend=backend, fullgraph=True)
    with torch.no_grad():
        first(x, torch.tensor(1.0))
        with pytest.raises(ts_compile.OptionError, match="two torch.compile calls"):
            second(x, torch.tensor(1.0))
    with pytest.raises(ts_compile.OptionError, match="Make one per call"):
        ts_compile.stats(second)
    assert ts_compile.stats(first)["computed_steps"] == 1


def test_backend_object_and_string_with_equal_options_run_alike():
    model = build_model(TENSOR_OUT)
    x = make_inputs(TENSOR_OUT)
    options = dict(compiler="eager", order=2, interval=3, warmup=1)
    by_name = torch.compile(model, backend="taylorseer", options=options, fullgraph=True)
    by_object = torch.compile(model, backend=ts_compile.TaylorSeerBackend(**options),
                              fullgraph=True)
    with torch.no_grad():
        for step in range(7):
            t = torch.tensor(1 - step / 7)
            torch.testing.assert_close(by_object(x, t), by_name(x, t), rtol=0, atol=0)
    assert ts_compile.stats(by_object) == ts_compile.stats(by_name)
    assert ts_compile.stats(by_object)["forecast_steps"] > 0
