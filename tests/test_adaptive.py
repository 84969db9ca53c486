"""options.adaptive: the computed steps chosen from the forecast's truncation-error estimate.

The compiled model (norms from its compute graph, the estimate and the rule on the host) against
the independent reference in tests/reference.py (the same rule, its own norms in float64 from its
own tables): same computed steps, same outputs, over drawn tolerances, intervals, orders,
forecasters and time variables; the edges (tolerance 0 and inf), resets and generations, CFG as
two calls, threads, graph breaks, stats, option errors and the refused export."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

import ts_compile
from ts_compile import adaptive
from ts_compile.api import controller_of
from ts_compile import AdaptiveOptions, ArtefactError, OptionError, TaylorSeerOptions

from .conftest import compile_ts
from .models import ModelSpec, build_model, block_paths, make_inputs
from .reference import EagerTaylorSeer, adaptive_schedule
from .test_forecasters import lebesgue_sum
from .turns import take_turns

SPEC = ModelSpec(width=8, lists=(3,), pre_op=True, post_op=True, seed=3)
STEPS = 14
# An estimate this close (relative) to the tolerance may fall on either side between the graphs'
# float32 norms and the reference's float64 ones: such a draw is not a test of the rule.
AMBIGUOUS = 1e-3


def clear_of(estimates, tolerance):
    """No estimate within AMBIGUOUS (relative) of a finite positive tolerance."""
    return not (0 < tolerance < math.inf) or all(
        abs(e - tolerance) > AMBIGUOUS * tolerance for _, e in estimates)


COMPILED = settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def step_times(steps=STEPS):
    return [1.0 - 0.06 * k - 0.002 * k * k for k in range(steps)]


def reference_for(model, order, forecaster, tolerance, min_interval, max_interval, warmup=1,
                  cooldown=0, num_steps=None, sigma=0.5, time="step", fresh_before=0):
    """The reference with the adaptive rule. It forecasts every block, as the compiled model's
    outputs do; its estimate reads the tables the compiled state holds, the live outputs only
    (the last block of the chain: `test_only_the_live_output_carries_the_signal`)."""
    time_of = (lambda args, kwargs: float(args[1])) if time == "timestep" else None
    paths = block_paths(SPEC)
    return EagerTaylorSeer(model, paths, order, None, time_of=time_of,
                           forecaster=forecaster, sigma=sigma,
                           adaptive=adaptive_schedule(tolerance, min_interval, max_interval,
                                                      warmup, cooldown, num_steps),
                           estimate_paths=paths[-1:], fresh_before=fresh_before)


def adaptive_options(tolerance, min_interval, max_interval):
    return {"tolerance": tolerance, "min_interval": min_interval, "max_interval": max_interval}


def lockstep(compiled, reference, x, times, order, time="step", tol=1e-5, check=True,
             rate=0.3, clock=None):
    """Run both on the same inputs (the latent moves with the reference's output); compare
    every output with the Lebesgue-scaled bound of test_forecasters.run_against_reference.
    Returns the compiled outputs."""
    nodes, outs = [], []
    with torch.no_grad():
        for step, t in enumerate(times):
            t = torch.tensor(t)
            got = compiled(x, t)
            expected = reference(x, t)
            s = (clock(float(t)) if clock is not None else
                 float(t) if time == "timestep" else float(step))
            if reference.computed_steps and reference.computed_steps[-1] == step:
                nodes = (nodes + [s])[-(order + 1):]
            if check:
                bound = tol + 8 * torch.finfo(torch.float32).eps * lebesgue_sum(nodes, s) \
                    * expected.abs().max().item()
                torch.testing.assert_close(got, expected, rtol=tol, atol=bound,
                                           msg=lambda m: f"step {step}: {m}")
            outs.append(got)
            x = x - rate * expected
    return outs


def assert_intervals(steps, min_interval, max_interval, warmup=1, cooldown_from=None):
    """Consecutive computed steps past the warm-up are min..max apart (the cooldown aside)."""
    for a, b in zip(steps, steps[1:]):
        if b < warmup or (cooldown_from is not None and b >= cooldown_from):
            continue
        assert min_interval <= b - a <= max_interval, (steps, a, b)


tolerances = st.one_of(st.just(0.0), st.just(math.inf),
                       st.floats(-4.0, 0.0).map(lambda e: 10.0 ** e))


@pytest.mark.parametrize("forecaster", ["taylor", "hermite", "newton"])
@COMPILED
@given(order=st.integers(1, 4), tolerance=tolerances, min_interval=st.integers(1, 3),
       extra=st.integers(0, 4), warmup=st.integers(1, 3), sigma=st.floats(0.1, 1.0),
       time=st.sampled_from(["step", "timestep"]), length=st.sampled_from([None, STEPS]))
@example(order=2, tolerance=0.02, min_interval=1, extra=4, warmup=1, sigma=0.5, time="step",
         length=None)
@example(order=1, tolerance=math.inf, min_interval=1, extra=3, warmup=2, sigma=0.5, time="step",
         length=STEPS)  # max_interval's compute due at the last step: taken one step early
def test_adaptive_matches_reference(forecaster, order, tolerance, min_interval, extra, warmup,
                                    sigma, time, length):
    torch._dynamo.reset()  # hypothesis examples share the model's code object: no recompile cap
    max_interval = min_interval + extra
    model = build_model(SPEC)
    options = dict(order=order, warmup=warmup, forecaster=forecaster, num_steps=length,
                   adaptive=adaptive_options(tolerance, min_interval, max_interval))
    if forecaster == "hermite":
        options["hermite_sigma"] = sigma
    if time == "timestep":
        options.update(time="timestep", time_input="t")
    compiled = compile_ts(model, **options)
    reference = reference_for(model, order, forecaster, tolerance, min_interval, max_interval,
                              warmup, num_steps=length, sigma=sigma, time=time)
    outs = lockstep(compiled, reference, make_inputs(SPEC), step_times(), order, time, check=False)
    assume(clear_of(reference.estimates, tolerance))
    chosen = ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"]
    assert chosen == reference.computed_steps
    moved = length is not None and time == "step"  # the last step may be decided early
    assert_intervals(chosen[:-1] if moved else chosen, min_interval, max_interval, warmup)
    # the outputs, now that the schedules are known to agree (re-run: compare every step)
    torch._dynamo.reset()
    compiled = compile_ts(model, **options)
    reference = reference_for(model, order, forecaster, tolerance, min_interval, max_interval,
                              warmup, num_steps=length, sigma=sigma, time=time)
    again = lockstep(compiled, reference, make_inputs(SPEC), step_times(), order, time)
    for a, b in zip(outs, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("forecaster", ["taylor", "hermite", "newton"])
@pytest.mark.parametrize("tolerance", [0.05, math.inf])
def test_adaptive_with_the_official_flux_recursion_matches_the_reference(forecaster, tolerance):
    """recursion="official-flux": the computed steps before warmup - 1 keep D_0 alone (newton:
    their newest point alone), so the first estimates read shorter tables. Checked against the
    reference with the same guard, and shown to differ from the plain recursion's reference."""
    order, warmup, low, high = 2, 3, 1, 4
    model = build_model(SPEC)
    compiled = compile_ts(model, order=order, warmup=warmup, forecaster=forecaster,
                          recursion="official-flux",
                          adaptive=adaptive_options(tolerance, low, high))
    reference = reference_for(model, order, forecaster, tolerance, low, high, warmup,
                              fresh_before=warmup - 1)
    outs = lockstep(compiled, reference, make_inputs(SPEC), step_times(), order)
    assert clear_of(reference.estimates, tolerance)
    chosen = ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"]
    assert chosen == reference.computed_steps
    assert 0 < STEPS - len(chosen), chosen  # some steps were forecast
    plain = reference_for(model, order, forecaster, tolerance, low, high, warmup)
    with torch.no_grad():
        x, gaps = make_inputs(SPEC), []
        for got, t in zip(outs, step_times()):
            expected = plain(x, torch.tensor(t))
            gaps.append((got - expected).abs().max().item())
            x = x - 0.3 * got
    assert max(gaps) > 1e-4, "the plain recursion's reference cannot tell the two apart here"


@pytest.mark.inductor
def test_adaptive_matches_reference_under_inductor():
    model = build_model(SPEC)
    tolerance, low, high = 0.02, 1, 5
    compiled = compile_ts(model, order=2, compiler="inductor",
                          adaptive=adaptive_options(tolerance, low, high))
    reference = reference_for(model, 2, "taylor", tolerance, low, high)
    lockstep(compiled, reference, make_inputs(SPEC), step_times(), 2, tol=1e-4)
    assert clear_of(reference.estimates, tolerance)
    chosen = ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"]
    assert chosen == reference.computed_steps
    assert 2 < len(chosen) < STEPS  # the estimate decided both ways


# Tolerances inside each forecaster's estimates here (taylor 0.055-0.2, newton 0.11-0.29 after
# the first step), so that the estimate decides both ways.
@pytest.mark.parametrize("forecaster, tolerance", [("taylor", 0.09), ("newton", 0.16)])
def test_adaptive_matches_reference_in_sigma_time(forecaster, tolerance):
    # time="sigma": the rows are in DDPM noise levels looked up from alphas_cumprod on the
    # device; the host's estimate uses the same sigmas read from the CPU time input. The
    # reference gets its sigmas from its own float64 transcription of the DDPM formula.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    timesteps = [999 - 70 * k for k in range(STEPS)]  # DDIM-like, decreasing

    def sigma_of(t: float) -> float:
        a = float(abar[int(round(t))])
        return math.sqrt((1 - a) / a)

    model = build_model(SPEC)
    low, high = 1, 6
    compiled = compile_ts(model, order=2, forecaster=forecaster, time="sigma", time_input="t",
                          alphas_cumprod=abar.tolist(),
                          adaptive=adaptive_options(tolerance, low, high))
    paths = block_paths(SPEC)
    reference = EagerTaylorSeer(model, paths, 2, None,
                                time_of=lambda args, kwargs: sigma_of(float(args[1])),
                                forecaster=forecaster,
                                adaptive=adaptive_schedule(tolerance, low, high, 1, 0, None),
                                estimate_paths=paths[-1:])
    lockstep(compiled, reference, make_inputs(SPEC), [float(t) for t in timesteps], 2,
             tol=1e-4, clock=sigma_of)
    assert clear_of(reference.estimates, tolerance)
    chosen = ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"]
    assert chosen == reference.computed_steps
    assert 2 < len(chosen) < STEPS  # the estimate decided both ways


def test_tolerance_zero_computes_every_step_exactly():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, adaptive=adaptive_options(0.0, 1, 8))
    x = make_inputs(SPEC)
    with torch.no_grad():
        for t in step_times():
            t = torch.tensor(t)
            torch.testing.assert_close(compiled(x, t), model(x, t), rtol=0, atol=0)
            x = x - 0.3 * model(x, t)
    stats = ts_compile.stats(compiled)
    assert stats["forecast_steps"] == 0
    assert stats["adaptive"]["last_generation"]["default"] == list(range(STEPS))


@pytest.mark.parametrize("high, warmup", [(1, 1), (3, 1), (4, 2), (20, 1)])
def test_tolerance_inf_computes_every_max_interval(high, warmup):
    model = build_model(SPEC)
    compiled = compile_ts(model, order=3, warmup=warmup,
                          adaptive=adaptive_options(math.inf, 1, high))
    x = make_inputs(SPEC)
    with torch.no_grad():
        for t in step_times():
            x = x - 0.3 * compiled(x, torch.tensor(t))
    expected = list(range(warmup)) + list(range(warmup - 1 + high, STEPS, high))
    assert ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"] == expected


@pytest.mark.parametrize("num_steps, cooldown, expected", [
    (STEPS, 0, [0, 1, 5, 9, 12]),  # max_interval's compute due at 13 (the last): taken at 12
    (STEPS, 1, [0, 1, 5, 9, 13]),  # the cooldown computes the last step: nothing moves
    (None, 0, [0, 1, 5, 9, 13]),  # the last step is not known
])
def test_a_compute_due_at_the_last_step_is_taken_one_step_early(num_steps, cooldown, expected):
    model = build_model(SPEC)
    options = dict(order=1, warmup=2, num_steps=num_steps, cooldown=cooldown,
                   adaptive=adaptive_options(math.inf, 1, 4))
    compiled = compile_ts(model, **options)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 1, None, adaptive=adaptive_schedule(
        math.inf, 1, 4, 2, cooldown, num_steps), estimate_paths=block_paths(SPEC)[-1:])
    lockstep(compiled, reference, make_inputs(SPEC), step_times(), 1)
    assert reference.computed_steps == expected
    assert ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"] == expected


def test_cooldown_and_min_interval():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, num_steps=STEPS, cooldown=2,
                          adaptive=adaptive_options(0.0, 3, 5))
    x = make_inputs(SPEC)
    with torch.no_grad():
        for t in step_times():
            x = x - 0.3 * compiled(x, torch.tensor(t))
    # tolerance 0: every step min_interval allows, then the cooldown's two
    counts = ts_compile.stats(compiled)["adaptive"]["computed_steps_per_generation"]
    assert counts == {"default": [len([0, 3, 6, 9, 12, 13])]}
    # num_steps ended the generation: its steps are history now; a new one starts over
    with torch.no_grad():
        compiled(make_inputs(SPEC), torch.tensor(1.0))
    assert ts_compile.stats(compiled)["adaptive"]["computed_steps_per_generation"] == \
        {"default": [6, 1]}


def test_reset_and_new_generation_start_over():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, adaptive=adaptive_options(0.02, 1, 5))

    def generation():
        x = make_inputs(SPEC)
        with torch.no_grad():
            for t in step_times():
                x = x - 0.3 * compiled(x, torch.tensor(t))
        return list(ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"])

    first = generation()
    ts_compile.reset(compiled)
    second = generation()  # after an explicit reset
    third = generation()  # the time went back up: a new generation by itself
    reference = reference_for(model, 2, "taylor", 0.02, 1, 5)
    lockstep(lambda x, t: reference.model(x, t), reference, make_inputs(SPEC), step_times(), 2,
             check=False)
    assert first == second == third == reference.computed_steps
    assert 2 < len(first) < STEPS
    assert ts_compile.stats(compiled)["adaptive"]["computed_steps_per_generation"] == \
        {"default": [len(first)] * 3}


@pytest.mark.parametrize("num_steps, rule", [
    (None, (0.02, 1, 6)),
    (STEPS, (0.1, 2, 5)),  # "cond" takes its last step's compute one step early, "uncond" not
])
def test_cfg_branches_decide_for_themselves(num_steps, rule):
    """Two calls per step (conditional, unconditional) with their own inputs: each branch's
    steps are the reference's on that branch's inputs alone."""
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, adaptive=adaptive_options(*rule), num_steps=num_steps)
    inputs = {"cond": make_inputs(SPEC), "uncond": make_inputs(SPEC).flip(0)}
    rates = {"cond": 0.3, "uncond": 1.5}  # how far each branch's latent moves per step
    refs = {name: reference_for(model, 2, "taylor", *rule, num_steps=num_steps)
            for name in inputs}
    xs = dict(inputs)
    with torch.no_grad():
        for t in step_times():
            t = torch.tensor(t)
            for name in ("cond", "uncond"):
                with ts_compile.branch(compiled, name):
                    got = compiled(xs[name], t)
                expected = refs[name](xs[name], t)
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
                xs[name] = xs[name] - rates[name] * expected
    chosen = ts_compile.stats(compiled)["adaptive"]["last_generation"]
    assert chosen == {name: refs[name].computed_steps for name in inputs}
    assert chosen["cond"] != chosen["uncond"]  # the point: not one schedule for both
    if num_steps is not None:
        assert refs["cond"].last_moved and not refs["uncond"].last_moved


def test_threads_decide_for_themselves():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, adaptive=adaptive_options(0.02, 1, 6))
    with torch.no_grad():
        compiled(make_inputs(SPEC), torch.tensor(1.0))  # compile first (one thread)
    ts_compile.reset(compiled)
    chosen = {}
    rates = (0.3, 1.5)  # how far each thread's latent moves per step

    def worker(k, in_turn):
        x = make_inputs(SPEC)
        with torch.no_grad():
            for t in step_times():
                out = in_turn(lambda: compiled(x, torch.tensor(t)))
                x = x - rates[k] * out
        # the calling thread's own schedule
        chosen[k] = ts_compile.stats(compiled)["adaptive"]["last_generation"]["default"]

    take_turns(lambda in_turn: worker(0, in_turn), lambda in_turn: worker(1, in_turn))
    expected = []
    for k in (0, 1):
        reference = reference_for(model, 2, "taylor", 0.02, 1, 6)
        lockstep(lambda x, t: reference.model(x, t), reference, make_inputs(SPEC),
                 step_times(), 2, check=False, rate=rates[k])
        expected.append(reference.computed_steps)
    assert expected[0] != expected[1]
    assert [chosen[0], chosen[1]] == expected
    counts = ts_compile.stats(compiled)["adaptive"]["computed_steps_per_generation"]["default"]
    # the warm-up call's generation (1 step), then each thread's own
    assert sorted(counts) == sorted([1, len(expected[0]), len(expected[1])])


def test_only_the_live_output_carries_the_signal():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=2, adaptive=adaptive_options(0.02, 1, 5))
    with torch.no_grad():
        compiled(make_inputs(SPEC), torch.tensor(1.0))
    (runtime,) = controller_of(compiled).runtimes
    assert [spec.region for spec in runtime.table_specs] == block_paths(SPEC)[-1:]


def test_graphs_of_one_call_take_its_first_graphs_decision():
    """A model split by graph breaks (one block per graph, each graph its own state): every
    graph of a call computes or forecasts together, and the estimate is the max over the
    branch's states, as the reference's over the three blocks' tables."""
    from .test_block_stack import Block, Model

    model = Model(Block, blocks=3, graph_breaks=True).eval()
    compiled = compile_ts(model, fullgraph=False, order=2,
                          adaptive=adaptive_options(0.1, 1, 6))
    paths = ["blocks.0", "blocks.1", "blocks.2"]
    reference = EagerTaylorSeer(model, paths, 2, None, adaptive=adaptive_schedule(0.1, 1, 6))
    generator = torch.Generator().manual_seed(3)
    x, context = (torch.randn(2, 6, 8, generator=generator) for _ in range(2))
    with torch.no_grad():
        for t in step_times():
            t = torch.tensor(t)
            got, expected = compiled(x, context, t), reference(x, context, t)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            x = x - 0.3 * expected
    assert clear_of(reference.estimates, 0.1)
    stats = ts_compile.stats(compiled)
    chosen = stats["adaptive"]["last_generation"]["default"]
    assert stats["graphs"] == 3 and chosen == reference.computed_steps
    assert 2 < len(chosen) < STEPS
    assert stats["computed_steps"] == 3 * len(chosen)  # each graph computed on the same steps


def test_stats_without_adaptive_and_signal_counters():
    model = build_model(SPEC)
    plain = compile_ts(model, order=2)
    with torch.no_grad():
        plain(make_inputs(SPEC), torch.tensor(1.0))
    assert ts_compile.stats(plain)["adaptive"] is None
    torch._dynamo.reset()
    compiled = compile_ts(model, order=2, adaptive=AdaptiveOptions(0.02, 1, 5))
    x = make_inputs(SPEC)
    with torch.no_grad():
        for t in step_times():
            x = x - 0.3 * compiled(x, torch.tensor(t))
    found = ts_compile.stats(compiled)
    chosen = found["adaptive"]["last_generation"]["default"]
    # CPU: one read per computed step, right after it; no sync
    assert found["adaptive"]["signal_reads"] == len(chosen) == found["computed_steps"]
    assert found["adaptive"]["syncs"] == 0
    x = make_inputs(SPEC)
    with torch.no_grad():  # a second generation, counted with since=
        for t in step_times():
            x = x - 0.3 * compiled(x, torch.tensor(t))
    later = ts_compile.stats(compiled, since=found)
    assert later["adaptive"]["signal_reads"] == len(chosen) == later["computed_steps"]
    assert later["adaptive"]["computed_steps_per_generation"] == {"default": [len(chosen)] * 2}


@pytest.mark.parametrize("options, names, allowed", [
    ({"adaptive": {"tolerance": -0.1}}, "'adaptive.tolerance'=-0.1", "a float >= 0"),
    ({"adaptive": {"tolerance": float("nan")}}, "'adaptive.tolerance'=nan", "a float >= 0"),
    ({"adaptive": {"tolerance": "0.1"}}, "'adaptive.tolerance'='0.1'", "a float >= 0"),
    ({"adaptive": {"min_interval": 0}}, "'adaptive.min_interval'=0", ">= 1"),
    ({"adaptive": {"min_interval": 3, "max_interval": 2}}, "'adaptive.max_interval'=2",
     "adaptive.min_interval=3"),
    ({"adaptive": {"tol": 0.1}}, "'adaptive'", "unknown key(s) ['tol']"),
    ({"adaptive": 0.05}, "'adaptive'=0.05", "a dict with keys tolerance"),
    ({"adaptive": {}, "schedule": [0, 3]}, "'adaptive'", "None when a schedule is given"),
    ({"adaptive": {}, "order": 0}, "'adaptive'", "order >= 1"),
    ({"adaptive": {}, "interval": 3}, "'interval'=3", "unused with adaptive"),
])
def test_bad_adaptive_options(options, names, allowed):
    with pytest.raises(OptionError) as err:
        TaylorSeerOptions.from_compile_kwargs(options=options)
    assert names in str(err.value) and allowed in str(err.value)


def test_adaptive_options_forms():
    opts = TaylorSeerOptions.from_compile_kwargs(options={"adaptive": {"tolerance": 1}})
    assert opts.adaptive == AdaptiveOptions(tolerance=1.0, min_interval=5, max_interval=8)
    # min_interval's default (5) gives way to a smaller max_interval instead of refusing it
    assert AdaptiveOptions(max_interval=3) == AdaptiveOptions(0.05, 3, 3)
    assert AdaptiveOptions(max_interval=12).min_interval == 5
    assert TaylorSeerOptions().adaptive is None
    assert TaylorSeerOptions(adaptive=AdaptiveOptions(0.1, 2, 4)).adaptive.max_interval == 4


def test_export_refuses_adaptive(tmp_path):
    model = build_model(SPEC)
    with pytest.raises(ArtefactError, match="adaptive is not supported in artefacts"):
        ts_compile.export(model, (make_inputs(SPEC), torch.tensor(1.0)), path=tmp_path / "a",
                          options={"adaptive": {"tolerance": 0.05}})
    assert not (tmp_path / "a").exists()


class LateFake(adaptive.LateNorms):
    """Norms that reach the host late, as CudaNorms' pinned copy does: `ready` only after
    `lag` queries (never, with lag=None: every read waits)."""

    def __init__(self, lag):
        self.lag, self.value, self.queries, self.sent = lag, None, 0, 0

    def send(self, norms):
        self.value, self.queries = norms.clone(), 0
        self.sent += 1

    def ready(self):
        self.queries += 1
        return self.lag is not None and self.queries > self.lag

    def wait(self):
        self.queries = 10 ** 9

    def values(self):
        return self.value.tolist()


@pytest.mark.parametrize("lag, waits", [(None, True), (0, False)])
def test_late_norms_are_read_at_the_next_decision(monkeypatch, lag, waits):
    """The CUDA path's protocol on CPU tensors: the norms are read at the next step's decision,
    not after the computed step; a read finds them ready (no sync) or waits once (a sync, at
    most one per computed step); the decisions are those of the immediate read."""
    def run(late):
        torch._dynamo.reset()
        if late:
            monkeypatch.setattr(adaptive, "late_norms_for", lambda device: LateFake(lag))
        compiled = compile_ts(build_model(SPEC), order=2, adaptive=adaptive_options(0.02, 1, 5))
        x = make_inputs(SPEC)
        with torch.no_grad():
            for t in step_times():
                x = x - 0.3 * compiled(x, torch.tensor(t))
        monkeypatch.undo()
        return ts_compile.stats(compiled)["adaptive"]

    now, later = run(False), run(True)
    assert later["last_generation"] == now["last_generation"]
    computed = len(now["last_generation"]["default"])
    # immediate: every computed step's norms read; late: only those a decision needed (not a
    # computed step's followed by another computed step: the warm-up, min_interval's)
    assert now["signal_reads"] == computed and now["syncs"] == 0
    assert 0 < later["signal_reads"] <= computed
    assert later["syncs"] == (later["signal_reads"] if waits else 0)


def test_the_fixed_schedule_functions_refuse_adaptive_options():
    options = TaylorSeerOptions(adaptive={"tolerance": 0.05})
    for ask in (lambda: ts_compile.computed_steps(options, 50),
                lambda: ts_compile.flops_speedup(options, 50),
                lambda: ts_compile.is_computed_step(3, options)):
        with pytest.raises(ValueError, match=r"stats\(compiled\)\['adaptive'\]"):
            ask()
