"""options.forecaster: every forecaster through the compiled graphs against the independent
transcription of its formula in tests/reference.py (HiCache's Hermite form; Lagrange's form of
the interpolating polynomial), over drawn schedules (non-uniform node spacing), orders, offsets
and time variables; the exactness of "newton" on polynomial features; option errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import ts_compile
from ts_compile.options import PRESETS, OptionError, TaylorSeerOptions
from ts_compile.taylor import (Forecaster, apply_device_time, forecast_from_table,
                               scalars_vector, updated_table)

from .conftest import compile_ts
from .models import ModelSpec, PolyModel, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer

SPEC = ModelSpec(width=8, lists=(3,), pre_op=True, post_op=True, seed=3)
FORECASTERS = ("taylor", "hermite", "newton")
# Each example compiles (eager inner compiler); no shrinking, as in test_properties.py.
COMPILED = settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def schedules(draw, num_steps=14):
    """Computed steps: 0, then gaps of 1..5 (warm-up-like runs of 1 and wide gaps mixed)."""
    steps, step = [0], 0
    while True:
        step += draw(st.integers(1, 5))
        if step >= num_steps:
            return steps
        steps.append(step)


@st.composite
def sampler_times(draw, num_steps=14):
    """Decreasing sampler times with uneven spacing (a diffusers-like schedule)."""
    gaps = draw(st.lists(st.floats(0.02, 0.2), min_size=num_steps, max_size=num_steps))
    times, t = [], 1.0
    for gap in gaps:
        times.append(t)
        t -= gap
    return times


def lebesgue_sum(nodes, s):
    """sum_j |L_j(s)|: how much the interpolating polynomial through ``nodes``, evaluated at
    ``s``, can amplify errors in the values at the nodes (1 at a node itself)."""
    total = 0.0
    for j, t_j in enumerate(nodes):
        weight = 1.0
        for m, t_m in enumerate(nodes):
            if m != j:
                weight *= (s - t_m) / (t_j - t_m)
        total += abs(weight)
    return total


def run_against_reference(forecaster, order, schedule, times, sigma=0.5, compiler="eager",
                          time="step", tol=1e-5, official_warmup=None):
    """`official_warmup`: recursion="official-flux" with that warm-up (the reference starts the
    tables of the computed steps before warm-up - 1 afresh). Returns the compiled outputs."""
    torch._dynamo.reset()  # hypothesis examples share the model's code object: no recompile cap
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    extra = dict(time="timestep", time_input="t") if time == "timestep" else {}
    if forecaster == "hermite":
        extra["hermite_sigma"] = sigma
    fresh_before = 0
    if official_warmup is not None:
        extra.update(recursion="official-flux", warmup=official_warmup)
        fresh_before = official_warmup - 1
    compiled = compile_ts(model, order=order, schedule=schedule, forecaster=forecaster,
                          compiler=compiler, **extra)
    time_of = (lambda args, kwargs: float(args[1])) if time == "timestep" else None
    reference = EagerTaylorSeer(model, block_paths(SPEC), order, lambda s: s in schedule,
                                time_of=time_of, forecaster=forecaster, sigma=sigma,
                                fresh_before=fresh_before)
    nodes, outs = [], []  # the computed steps' time variable, newest last; the outputs
    with torch.no_grad():
        for step, t in enumerate(times):  # a sampler's loop: the latent moves every step
            s = t if time == "timestep" else float(step)
            if step in schedule:
                nodes = (nodes + [s])[-(order + 1):]
            t = torch.tensor(t)
            got = compiled(x, t)
            expected = reference(x, t)
            # Both sides round in float32, the graphs in other places than the reference; an
            # extrapolation amplifies that by the Lebesgue sum of its nodes (358 at a drawn
            # case with two computed times 0.02 apart, order 4), so the bound grows with it.
            step_tol = tol + 8 * torch.finfo(torch.float32).eps * lebesgue_sum(nodes, s) \
                * expected.abs().max().item()
            torch.testing.assert_close(got, expected, rtol=tol, atol=step_tol,
                                       msg=lambda m: f"step {step}: {m}")
            outs.append(got)
            x = x - 0.3 * got
    stats = ts_compile.stats(compiled)
    assert stats["forecaster"] == forecaster
    assert stats["computed_steps"] == len([s for s in range(len(times)) if s in schedule])
    return outs


@pytest.mark.parametrize("forecaster", FORECASTERS)
@COMPILED
@given(order=st.integers(0, 4), schedule=schedules(), sigma=st.floats(0.1, 1.0),
       times=sampler_times())
def test_forecasters_match_reference_in_step_time(forecaster, order, schedule, sigma, times):
    # Step time: offsets and node gaps are the step indices of the drawn schedule.
    run_against_reference(forecaster, order, set(schedule), times, sigma)


@pytest.mark.parametrize("forecaster", FORECASTERS)
@COMPILED
@given(order=st.integers(0, 4), schedule=schedules(), sigma=st.floats(0.1, 1.0),
       times=sampler_times())
# A case CI drew: computed times 0.02 apart, extrapolated 0.24 beyond them at order 4.
@example(order=4, schedule=[0, 1, 4, 5, 7, 8, 13], sigma=1.0,
         times=[1.0, 0.929, 0.7426, 0.5611, 0.5411, 0.3725, 0.3389, 0.3084, 0.2884, 0.1441,
                0.0527, -0.0473, -0.0796, -0.1179])
def test_forecasters_match_reference_in_sampler_time(forecaster, order, schedule, sigma, times):
    # time="timestep": the coefficients and divisors are made on the device from the times.
    run_against_reference(forecaster, order, set(schedule), times, sigma, time="timestep")


@pytest.mark.inductor
@pytest.mark.parametrize("forecaster", ["hermite", "newton"])
def test_forecasters_match_reference_under_inductor(forecaster):
    times = [1.0 - 0.07 * k - 0.004 * k * k for k in range(12)]
    run_against_reference(forecaster, 3, {0, 1, 2, 5, 9}, times, 0.7, compiler="inductor",
                          time="timestep")


@pytest.mark.parametrize("forecaster", FORECASTERS)
@pytest.mark.parametrize("time", ["step", "timestep"])
def test_forecasters_with_the_official_flux_recursion_match_reference(forecaster, time):
    """recursion="official-flux" (the official FLUX code's warm-up guard) with every forecaster:
    the computed steps before warm-up - 1 keep D_0 alone (newton: their newest point alone).
    The outputs also differ from the plain recursion's, so the comparison can tell them apart."""
    times = [1.0 - 0.07 * k for k in range(12)]
    schedule = {0, 1, 2, 5, 8, 11}  # warm-up 3, interval 3
    official = run_against_reference(forecaster, 2, schedule, times, 0.7, time=time,
                                     official_warmup=3)
    plain = run_against_reference(forecaster, 2, schedule, times, 0.7, time=time)
    assert max((a - b).abs().max().item() for a, b in zip(official, plain)) > 1e-4


@pytest.mark.parametrize("time", ["step", "timestep"])
@pytest.mark.parametrize("degree, order", [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (2, 4)])
def test_newton_forecasts_polynomials_of_degree_up_to_order_exactly(degree, order, time):
    # The block outputs are polynomials of `degree` in t = the step index; the schedule's gaps
    # are uneven (1, 1, 3, 4, ...), so this needs true divided differences. Exact from the
    # (degree + 1)-th computed step on (before it, fewer points than the degree needs).
    schedule = [0, 1, 2, 5, 9, 13]
    model = PolyModel(degree, width=8, n_blocks=2, seed=degree).eval()
    x = torch.randn(2, 3, 8)
    extra = dict(time="timestep", time_input="t") if time == "timestep" else {}
    compiled = compile_ts(model, order=order, schedule=schedule, forecaster="newton", **extra)
    with torch.no_grad():
        for step in range(17):
            t = torch.tensor(float(step))
            out = compiled(x, t)
            if step >= schedule[degree]:
                torch.testing.assert_close(out, model(x, t), rtol=1e-4, atol=1e-4,
                                           msg=lambda m: f"step {step}: {m}")
    assert ts_compile.stats(compiled)["forecast_steps"] == 11


@pytest.mark.parametrize("forecaster", ["taylor", "hermite"])
def test_taylor_style_forecasters_are_not_exact_on_a_quadratic(forecaster):
    # What the exactness test above measures is a property of "newton": the same quadratic,
    # order and schedule miss by far more than its tolerance with TaylorSeer's rows.
    model = PolyModel(2, width=8, n_blocks=2, seed=2).eval()
    x = torch.randn(2, 3, 8)
    compiled = compile_ts(model, order=2, schedule={0, 1, 2, 5, 9, 13}, forecaster=forecaster)
    with torch.no_grad():
        errors = [(compiled(x, t) - model(x, t)).abs().max().item()
                  for t in map(lambda s: torch.tensor(float(s)), range(17))]
    assert max(errors) > 1e-2


# ------------------------------------------------------------------------------------------
# the scalars: host-time and device-time filling agree, and taylor's did not change
# ------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(forecaster=st.sampled_from(FORECASTERS), order=st.integers(0, 4),
       gaps=st.lists(st.integers(1, 6), min_size=0, max_size=6), offset=st.integers(1, 6),
       sigma=st.floats(0.1, 1.0), seed=st.integers(0, 2**16))
def test_device_time_scalars_equal_host_time_scalars(forecaster, order, gaps, offset, sigma,
                                                     seed):
    # The same history in both: the host's step-time scalars, and unit scalars completed on the
    # device from the times (time="timestep" with the step index as the time).
    steps = [0]
    for gap in gaps:
        steps.append(steps[-1] + gap)
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(5, generator=gen) for _ in steps]
    host = Forecaster(forecaster, order, sigma)
    unit = Forecaster(forecaster, order, sigma, unit_time=True)
    basis = unit.device_basis(torch.device("cpu"))
    exponents = torch.arange(order + 1, dtype=torch.float32)
    times = torch.zeros(max(order, 1))
    tables = {"host": torch.full((order + 1, 5), float("nan")),
              "device": torch.full((order + 1, 5), float("nan"))}
    nodes, filled = [], 0
    for step, feature in zip(steps, features):
        rows = filled
        scalars = {"host": scalars_vector(host.compute_scalars(step, nodes, rows)),
                   "device": scalars_vector(unit.compute_scalars(step, nodes, rows))}
        apply_device_time(scalars["device"], torch.tensor(float(step)), times, exponents, True,
                          forecaster, basis)
        torch.testing.assert_close(scalars["device"], scalars["host"])
        for kind, table in tables.items():
            table.copy_(torch.stack(updated_table(table, feature, scalars[kind])))
        filled = min(rows + 1, order + 1)
        nodes = [step, *nodes[:filled - 1]]
    now = steps[-1] + offset
    host_scalars = scalars_vector(host.forecast_scalars(now, nodes, filled))
    device_scalars = scalars_vector(unit.forecast_scalars(now, nodes, filled))
    apply_device_time(device_scalars, torch.tensor(float(now)), times, exponents, False,
                      forecaster, basis)
    torch.testing.assert_close(device_scalars, host_scalars, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(forecast_from_table(tables["device"], device_scalars, torch.float32),
                               forecast_from_table(tables["host"], host_scalars, torch.float32),
                               rtol=1e-4, atol=1e-4)


def test_taylor_scalars_keep_todays_values():
    # "taylor" (the default) writes what it wrote before the forecaster option: x^i / i! and the
    # latest gap, now as one divisor per row.
    taylor = Forecaster("taylor", 3)
    assert taylor.forecast_scalars(9, [6, 3, 0], 3)[:4] == [1.0, 3.0, 9 / 2, 0.0]
    assert taylor.compute_scalars(9, [6, 3, 0], 3)[4:] == [3.0, 3.0, 3.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------
# options, explain
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (dict(forecaster="chebyshev"), "'forecaster'='chebyshev' is invalid; allowed: 'taylor', "
                                   "'hermite', 'newton'"),
    (dict(forecaster="hermite", hermite_sigma=0.0), "'hermite_sigma'=0.0 is invalid"),
    (dict(forecaster="hermite", hermite_sigma=1.5), r"a float in \(0, 1\]"),
    (dict(forecaster="hermite", hermite_sigma=True), "'hermite_sigma'=True is invalid"),
    (dict(forecaster="hermite", hermite_sigma="0.5"), "'hermite_sigma'='0.5' is invalid"),
    (dict(forecaster="hermite", hermite_sigma=float("nan")), "'hermite_sigma'=nan is invalid"),
    (dict(hermite_sigma=0.7), "unless forecaster='hermite'"),
    (dict(forecaster="newton", hermite_sigma=0.7), "unless forecaster='hermite'"),
])
def test_invalid_forecaster_options_name_the_fix(options, message):
    with pytest.raises(OptionError, match=message):
        TaylorSeerOptions.from_compile_kwargs(options=options)


def test_forecaster_defaults_and_presets():
    assert TaylorSeerOptions().forecaster == "taylor"
    assert TaylorSeerOptions(forecaster="hermite").hermite_sigma == 0.5
    assert TaylorSeerOptions(forecaster="hermite", hermite_sigma=0.7).hermite_sigma == 0.7
    for name in PRESETS:  # the presets reproduce the official TaylorSeer code: taylor
        assert TaylorSeerOptions.from_preset(name).forecaster == "taylor"
    assert TaylorSeerOptions.from_preset("official-flux", forecaster="newton").order == 1


def test_explain_names_the_forecaster():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    found = ts_compile.explain(model, x, torch.tensor(0.5),
                               options={"forecaster": "hermite", "hermite_sigma": 0.6})
    assert "forecaster: hermite (sigma=0.6)" in str(found[0])
    assert "forecaster: taylor" in str(ts_compile.explain(model, x, torch.tensor(0.5))[0])


def test_hermite_coefficients_are_hicache_at_small_orders():
    # Written out by hand from H_1 = 2y, H_2 = 4y^2 - 2 (sigma = 0.5, x = 3): 1,
    # 0.5 * 2 * 1.5 = 1.5 and 0.25 * (4 * 2.25 - 2) / 2 = 0.875.
    got = Forecaster("hermite", 2, 0.5).forecast_scalars(3, [0], 3)[:3]
    assert got == pytest.approx([1.0, 1.5, 0.875])
    assert math.isclose(Forecaster("newton", 2).forecast_scalars(7, [5, 2], 2)[1], 2.0)


# ------------------------------------------------------------------------------------------
# an exported artefact records its forecaster, and the loaded runner forecasts the same way
# ------------------------------------------------------------------------------------------
@pytest.mark.export
def test_onnx_artefact_forecasts_with_its_recorded_forecaster(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from ts_compile.artefact import ArtefactError
    from ts_compile.deploy import export, load

    model = build_model(SPEC)
    x = make_inputs(SPEC)
    schedule = [0, 1, 2, 5, 9]
    options = dict(order=3, schedule=schedule, forecaster="newton", time="timestep",
                   time_input="t")
    path = export(model, (x, torch.tensor(1.0)), options=options, format="onnx",
                  path=tmp_path / "blocks.tsonnx")
    manifest_file = path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["options"]["forecaster"] == "newton"
    runner = load(path)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 3, lambda s: s in schedule,
                                time_of=lambda args, kwargs: float(args[1]), forecaster="newton")
    with torch.no_grad():
        for step in range(12):
            t = torch.tensor(1.0 - 0.06 * step - 0.003 * step * step)
            torch.testing.assert_close(runner(x, t), reference(x, t), rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"step {step}: {m}")
    assert runner.stats()["forecaster"] == "newton"
    assert runner.stats()["forecast_steps"] == 7

    manifest["options"]["forecaster"] = "chebyshev"  # e.g. written by a newer ts_compile
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ArtefactError, match="invalid options.*'forecaster'='chebyshev'"):
        load(path)
