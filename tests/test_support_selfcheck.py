"""Self-checks for the test-support modules tests/reference.py and tests/models.py."""

import math

import pytest
import torch
from hypothesis import given, settings, HealthCheck

try:
    from tests.reference import EagerTaylorSeer, official_schedule
    from tests.models import (ModelSpec, PolyModel, block_models, block_paths,
                              build_model, make_inputs, poly_block_paths)
except ImportError:  # tests/ itself on sys.path (rootdir-less "prepend" import mode)
    from reference import EagerTaylorSeer, official_schedule
    from models import (ModelSpec, PolyModel, block_models, block_paths,
                        build_model, make_inputs, poly_block_paths)


def _t(s):
    return torch.tensor(float(s))


SPECS = [
    ModelSpec(width=8, lists=(2, 3)),
    ModelSpec(width=4, lists=(3,), tuple_out=True, pre_op=True, post_op=True, seed=3),
    ModelSpec(width=16, lists=(2, 2), tuple_out=True, between_op=True, seed=7),
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("order", [0, 2, 4])
def test_all_computed_equals_plain_model(spec, order):
    model = build_model(spec)
    x = make_inputs(spec)
    ts = EagerTaylorSeer(model, block_paths(spec), order, lambda s: True)
    for s in range(6):
        with torch.no_grad():
            ref = model(x, _t(s))
        torch.testing.assert_close(ts(x, _t(s)), ref, rtol=0, atol=0)
    assert ts.computed_steps == list(range(6))


def test_official_schedule():
    sched = official_schedule(warmup=3, interval=4)
    assert [s for s in range(15) if sched(s)] == [0, 1, 2, 6, 10, 14]
    sched = official_schedule(warmup=2, interval=3, cooldown=2, num_steps=12)
    assert [s for s in range(12) if sched(s)] == [0, 1, 4, 7, 10, 11]
    sched = official_schedule(warmup=1, interval=1)
    assert all(sched(s) for s in range(10))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_linear_trajectory_forecast_exact(order):
    model = PolyModel(degree=1, width=8, n_blocks=3, seed=1)
    x = make_inputs(model)
    sched = official_schedule(warmup=2, interval=3)
    ts = EagerTaylorSeer(model, poly_block_paths(3), order, sched)
    forecast_steps = 0
    for s in range(20):
        out = ts(x, _t(s))
        with torch.no_grad():
            ref = model(x, _t(s))
        if not sched(s):
            forecast_steps += 1
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert forecast_steps > 0


def test_quadratic_not_exact_with_lagged_differences():
    # Expected limitation of the lagged-difference recursion (not a bug).
    model = PolyModel(degree=2, width=8, n_blocks=2, seed=2)
    x = make_inputs(model)
    sched = official_schedule(warmup=3, interval=3)
    ts = EagerTaylorSeer(model, poly_block_paths(2), 2, sched)
    max_err = 0.0
    for s in range(12):
        out = ts(x, _t(s))
        with torch.no_grad():
            max_err = max(max_err, (out - model(x, _t(s))).abs().max().item())
    assert max_err > 1e-3


def test_order0_repeats_last_computed_output():
    spec = ModelSpec(width=8, lists=(2, 2), tuple_out=True, seed=5)
    model = build_model(spec)
    x = make_inputs(spec)
    paths = block_paths(spec)
    sched = official_schedule(warmup=1, interval=4)
    ts = EagerTaylorSeer(model, paths, 0, sched)
    captured = {}
    for s in range(10):
        ts(x, _t(s))
        if sched(s):
            captured = {p: [e[0].clone() for e in ts.tables[p]] for p in paths}
        else:
            for p in paths:
                fc = ts.forecast(p, s)
                assert isinstance(fc, tuple) and len(fc) == 2
                for k in range(2):
                    torch.testing.assert_close(fc[k], captured[p][k], rtol=0, atol=0)
    # forwards restored after forecast steps
    for p in paths:
        assert "forward" not in model.get_submodule(p).__dict__


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_tables_grow_one_entry_per_computed_step(order):
    spec = ModelSpec(width=4, lists=(2,), tuple_out=True)
    model = build_model(spec)
    x = make_inputs(spec)
    sched = official_schedule(warmup=2, interval=2)
    ts = EagerTaylorSeer(model, block_paths(spec), order, sched)
    n_computed = 0
    for s in range(14):
        ts(x, _t(s))
        if sched(s):
            n_computed += 1
        for p in block_paths(spec):
            assert len(ts.tables[p]) == 2
            for tab in ts.tables[p]:
                assert len(tab) == min(n_computed, order + 1)
                assert all(e.dtype == torch.float32 for e in tab)
    assert len(ts.computed_steps) == n_computed
    ts.reset()
    assert ts.tables == {} and ts.computed_steps == [] and ts.step == 0


def test_first_step_is_always_computed_and_dtype_cast():
    spec = ModelSpec(width=8, lists=(2, 2))
    model = build_model(spec).to(torch.bfloat16)
    x = make_inputs(spec).to(torch.bfloat16)
    ts = EagerTaylorSeer(model, block_paths(spec), 2, lambda s: s % 3 == 1)
    outs = [ts(x, _t(s)) for s in range(6)]
    assert ts.computed_steps == [0, 1, 4]
    assert all(o.dtype == torch.bfloat16 and torch.isfinite(o).all() for o in outs)
    assert ts.forecast("blocks0.0", 5).dtype == torch.bfloat16


def test_hand_computed_order2_table():
    model = PolyModel(degree=2, width=4, n_blocks=2, seed=0)
    x = make_inputs(model)
    sched = lambda s: s in (0, 2, 3)
    ts = EagerTaylorSeer(model, poly_block_paths(2), 2, sched)
    for s in range(6):
        ts(x, _t(s))
    blk = model.blocks[0]
    f0, f2, f3 = (blk.value(s).float() for s in (0, 2, 3))
    d1_old = (f2 - f0) / 2
    d1 = (f3 - f2) / 1
    d2 = (d1 - d1_old) / 1
    tab = ts.tables["blocks.0"][0]
    torch.testing.assert_close(tab[0][0, 0], f3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tab[1][0, 0], d1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tab[2][0, 0], d2, rtol=1e-5, atol=1e-6)
    expect = f3 + d1 * 2 + d2 * (2 ** 2 / math.factorial(2))
    torch.testing.assert_close(ts.forecast("blocks.0", 5)[0, 0], expect, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=block_models())
def test_hypothesis_models_forward_finite(spec):
    model = build_model(spec)
    assert model is not build_model(spec)
    x = make_inputs(spec, batch=2, tokens=5)
    paths = block_paths(spec)
    assert len(paths) == sum(spec.lists)
    for p in paths:
        model.get_submodule(p)
    with torch.no_grad():
        for t in (torch.tensor(0.0), torch.tensor(25.0), torch.tensor([3.0, 40.0])):
            out = model(x, t)
            assert out.shape == x.shape
            assert torch.isfinite(out).all()
            assert out.abs().max() < 50
        # deterministic across builds
        torch.testing.assert_close(build_model(spec)(x, _t(7)), model(x, _t(7)), rtol=0, atol=0)
    ts = EagerTaylorSeer(model, paths, 2, official_schedule(2, 3))
    for s in range(8):
        assert torch.isfinite(ts(x, _t(s))).all()
