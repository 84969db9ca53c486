"""Each call must land on the right step, branch, generation and thread (issue 13's table, a test
per row), checked against the independent eager reference (one `EagerTaylorSeer` per branch and
per generation, as a correct TaylorSeer would keep them), or else warned about and counted.

The loops are hand-written samplers: the latent changes every step (x <- x + dt * v, a new
tensor), the time goes down, classifier-free guidance is two calls per step with the same latent
and two conditionings.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from diffusers.utils.peft_utils import apply_lora_scale
from torch import nn

import ts_compile
from ts_compile import stepping
from ts_compile.api import controller_of
from ts_compile.backend import _input_labels
from ts_compile.lane import LATE_CLOCK

from .conftest import backend_kwargs, compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule
from .turns import take_turns

SPEC = ModelSpec(width=8, lists=(2, 2), pre_op=True, post_op=True, seed=5)
ORDER, INTERVAL, WARMUP = 2, 3, 1
TOL = dict(rtol=1e-5, atol=1e-5)
pytestmark = pytest.mark.usefixtures("backend_form")  # backend="taylorseer" and the object form


class CondModel(nn.Module):
    """A block model with a conditioning input, called like a CFG denoiser: (x, t, cond)."""

    def __init__(self, spec: ModelSpec = SPEC) -> None:
        super().__init__()
        self.inner = build_model(spec)

    def forward(self, x, t, cond):
        return self.inner(x + cond, t)


PATHS = ["inner." + p for p in block_paths(SPEC)]


def reference(model, num_steps=None):
    return EagerTaylorSeer(model, PATHS, ORDER, official_schedule(WARMUP, INTERVAL, 0, num_steps))


def conds(batch=2, tokens=3):
    g = torch.Generator().manual_seed(7)
    return {name: torch.randn(batch, tokens, SPEC.width, generator=g) for name in ("c", "u")}


def times(steps):
    return [1.0 - k / steps for k in range(steps)]


def ts_messages(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("ts_compile")]


def cfg_generation(call, x, steps, cond, names=("c", "u"), scale=2.0, fresh_latent=False):
    """A CFG sampler: per step one call per name with the same latent tensor; returns outputs."""
    outs = []
    for t in times(steps):
        t = torch.tensor(t)
        v = {}
        for name in names:
            v[name] = call(name, x.clone() if fresh_latent else x, t, cond[name])
            outs.append(v[name])
        guided = v[names[-1]] + scale * (v[names[0]] - v[names[-1]]) if len(names) > 1 else v[names[0]]
        x = x - 0.05 * guided
    return outs


# ------------------------------------------------------------------------------------------
# row 1: classifier-free guidance as two calls per step, no cache_context
# ------------------------------------------------------------------------------------------
def test_cfg_as_two_calls_per_step_gets_one_state_per_branch():
    model = CondModel()
    x, cond = make_inputs(SPEC), conds()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    refs = {"c": reference(model), "u": reference(model)}
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        want = cfg_generation(lambda n, *a: refs[n](*a), x, 10, cond)
        got = cfg_generation(lambda n, *a: compiled(*a), x, 10, cond)
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"call {k}: {m}")
    assert ts_messages(record) == []
    stats = ts_compile.stats(compiled)
    assert stats["second_calls"] == 10 and stats["contexts"] == ["default", "default:1"]
    assert stats["forecast_steps"] == 2 * (10 - len(refs["c"].computed_steps)) > 0


class WrappedCondModel(CondModel):
    """CondModel with its forward behind diffusers' `apply_lora_scale`, a `(self, *args,
    **kwargs)` wrapper (48 diffusers transformers, FLUX among them): the frame Dynamo compiles
    names no argument, yet the latent and the time must still be found."""

    @apply_lora_scale("attention_kwargs")
    def forward(self, x, t, cond):
        return self.inner(x + cond, t)


def _passing_through(forward):
    """A wrapper of another library's spelling: `(self, *inputs, **options)`."""
    @functools.wraps(forward)
    def wrapper(self, *inputs, **options):
        return forward(self, *inputs, **options)
    return wrapper


class OtherWrappedCondModel(CondModel):
    @_passing_through
    def forward(self, x, t, cond):
        return self.inner(x + cond, t)


@pytest.mark.parametrize("by", ["keywords", "position", "position, *inputs"])
def test_cfg_as_two_calls_through_a_wrapped_forward_gets_one_state_per_branch(by):
    model = OtherWrappedCondModel() if by.endswith("*inputs") else WrappedCondModel()
    x, cond = make_inputs(SPEC), conds()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    refs = {"c": reference(model), "u": reference(model)}
    if by == "keywords":
        call = lambda n, x, t, c: compiled(x=x, t=t, cond=c)  # noqa: E731
    else:
        call = lambda n, x, t, c: compiled(x, t, c)  # noqa: E731
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        want = cfg_generation(lambda n, *a: refs[n](*a), x, 10, cond)
        got = cfg_generation(call, x, 10, cond)
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"call {k}: {m}")
    assert ts_messages(record) == []
    stats = ts_compile.stats(compiled)
    assert stats["second_calls"] == 10 and stats["contexts"] == ["default", "default:1"]
    runtime = controller_of(compiled).runtimes[0]  # placed by the latent and the time inputs
    labels = _input_labels(runtime.graphs)
    varargs = "inputs" if by.endswith("*inputs") else "args"
    first, second = (("['x']", "['t']") if by == "keywords" else
                     (f"['{varargs}'][0]", f"['{varargs}'][1]"))
    assert labels[runtime.latent_index].endswith(first), labels
    assert labels[runtime.clock_index].endswith(second), labels


def test_cfg_named_with_branch_matches_reference():
    model = CondModel()
    x, cond = make_inputs(SPEC), conds()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    refs = {"c": reference(model), "u": reference(model)}

    def call(name, *args):
        with ts_compile.branch(compiled, name):
            return compiled(*args)

    with torch.no_grad():
        want = cfg_generation(lambda n, *a: refs[n](*a), x, 8, cond)
        with ts_compile.generation(compiled, num_steps=8):
            got = cfg_generation(call, x, 8, cond)
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"call {k}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["contexts"] == ["c", "u"] and stats["second_calls"] == 0


def test_cfg_named_running_past_num_steps_computes_every_later_step_of_both_names():
    # Past num_steps with the time still going down, both names go on (computed, warned once).
    # Each name's call is compared with its own last time: "u" runs at the time "c" just ran,
    # which once restarted both generations every step (a state-machine run found it).
    model = CondModel()
    x, cond = make_inputs(SPEC), conds()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, num_steps=6)
    refs = {"c": reference(model, num_steps=6), "u": reference(model, num_steps=6)}

    def call(name, *args):
        with ts_compile.branch(compiled, name):
            return compiled(*args)

    with torch.no_grad(), pytest.warns(UserWarning, match="ran past num_steps=6"):
        want = cfg_generation(lambda n, *a: refs[n](*a), x, 9, cond)
        got = cfg_generation(call, x, 9, cond)
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"call {k}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["ran_past_end"] == 2 and stats["time_went_back"] == 0
    assert refs["c"].computed_steps == [0, 3, 6, 7, 8]  # 6, 7, 8: past num_steps
    assert stats["computed_steps"] == 2 * 5


def test_cfg_with_a_fresh_latent_tensor_per_call_is_loud():
    # Equal times, different latent tensors: cannot be told from a sampler evaluating twice at
    # one time, so they are taken as two steps, with a warning naming the fix.
    model = CondModel()
    x, cond = make_inputs(SPEC), conds()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    with torch.no_grad(), pytest.warns(UserWarning, match="same time input but different latent"):
        cfg_generation(lambda n, *a: compiled(*a), x, 4, cond, fresh_latent=True)
    assert ts_compile.stats(compiled)["same_time"] == 4


def test_identical_calls_repeated_are_steps_after_a_warning():
    # A loop repeating one call (same latent tensor, same time) is not classifier-free guidance.
    model = build_model(SPEC)
    x, t = make_inputs(SPEC), torch.tensor(0.5)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    with torch.no_grad(), pytest.warns(UserWarning, match="more than 4 calls"):
        outs = [compiled(x, t) for _ in range(12)]
    stats = ts_compile.stats(compiled)
    assert stats["repeated_calls"] == 1 and stats["forecast_steps"] > 0
    for out in outs:  # same input: the forecast of a constant feature is that feature
        torch.testing.assert_close(out, model(x, t), **TOL)


# ------------------------------------------------------------------------------------------
# row 2: two generations back to back, no reset, no num_steps
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("time", ["step", "timestep"])
def test_second_generation_without_reset_starts_fresh(time):
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    extra = dict(time="timestep", time_input="t") if time == "timestep" else {}
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, **extra)
    time_of = (lambda args, kwargs: float(args[1])) if time == "timestep" else None
    ref = EagerTaylorSeer(model, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL),
                          time_of=time_of)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        check_generations(compiled, ref, x, (9, 7))  # no reset between them
    assert ts_messages(record) == []
    assert ts_compile.stats(compiled)["time_went_back"] == 1


# ------------------------------------------------------------------------------------------
# row 3: num_steps set, the loop runs fewer or more steps
# ------------------------------------------------------------------------------------------
def run_generations(compiled, model, lengths, num_steps):
    """Generations of the given lengths without reset; every call against a reference that
    knows num_steps (so it computes the steps past the end, as the official rule does)."""
    ref = EagerTaylorSeer(model, block_paths(SPEC), ORDER,
                          official_schedule(WARMUP, INTERVAL, 0, num_steps))
    check_generations(compiled, ref, make_inputs(SPEC), lengths)


def check_generations(compiled, ref, x, lengths):
    """Generations of the given lengths, nothing said between them (the time goes back up), each
    call against the reference (reset by hand at each generation's start)."""
    with torch.no_grad():
        for generation, steps in enumerate(lengths):
            ref.reset()
            latent = x
            for step, t in enumerate(times(steps)):
                t = torch.tensor(t)
                got, want = compiled(latent, t), ref(latent, t)
                torch.testing.assert_close(got, want, **TOL,
                                           msg=lambda m: f"generation {generation} step {step}: {m}")
                latent = latent - 0.05 * got


@pytest.mark.parametrize("lengths, event, message", [
    ((15, 20), "ended_early", "ended before num_steps=20"),
    ((28, 20), "ran_past_end", "ran past num_steps=20"),
])
def test_loop_length_other_than_num_steps_is_handled_and_loud(lengths, event, message):
    model = build_model(SPEC)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, num_steps=20)
    with pytest.warns(UserWarning, match=message):
        run_generations(compiled, model, lengths, num_steps=20)
    assert ts_compile.stats(compiled)[event] == 1


def test_generation_block_with_other_length_than_num_steps_warns_at_its_end():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    with torch.no_grad(), pytest.warns(UserWarning, match=r"num_steps=20\) ran 15 steps"):
        with ts_compile.generation(compiled, num_steps=20):
            for t in times(15):
                compiled(x, torch.tensor(t))
    assert ts_compile.stats(compiled)["ended_early"] == 1


def test_exactly_num_steps_needs_no_reset_and_warns_nothing():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, num_steps=12)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_generations(compiled, model, (12, 12, 12), num_steps=12)
    assert ts_messages(record) == []
    stats = ts_compile.stats(compiled)
    assert stats["ended_early"] == stats["ran_past_end"] == stats["time_went_back"] == 0


# ------------------------------------------------------------------------------------------
# row 4: two threads share one compiled model, one generation each, steps interleaved
# ------------------------------------------------------------------------------------------
def test_threads_keep_their_own_generation():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    steps = 10
    with torch.no_grad():
        compiled(make_inputs(SPEC), torch.tensor(1.0))  # compile first (one thread)
    ts_compile.reset(compiled)
    calls = {0: [], 1: []}

    def worker(k, in_turn):  # strict alternation A, B, A, B
        x = make_inputs(SPEC) * (1 + k)
        with torch.no_grad():
            for t in times(steps):
                t = torch.tensor(t + 0.01 * k)
                out = in_turn(lambda: compiled(x, t))
                calls[k].append((x, t, out))
                x = x - 0.05 * out

    take_turns(lambda in_turn: worker(0, in_turn), lambda in_turn: worker(1, in_turn))
    for k in (0, 1):  # the reference runs the model's modules: one thread at a time
        ref = EagerTaylorSeer(model, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL))
        assert len(calls[k]) == steps
        with torch.no_grad():
            for step, (x, t, out) in enumerate(calls[k]):
                torch.testing.assert_close(out, ref(x, t), **TOL,
                                           msg=lambda m: f"thread {k} step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["threads"] == 3  # the main thread compiled; two generated
    assert stats["forecast_steps"] == 2 * (steps - sum(official_schedule(WARMUP, INTERVAL)(s)
                                                      for s in range(steps)))


# ------------------------------------------------------------------------------------------
# row 5: an exception while Dynamo retraces (not inside a compiled graph)
# ------------------------------------------------------------------------------------------
def _interruptible():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    return model, x, compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)


def _assert_a_fresh_generation(compiled, model, x, rest):
    """After the interruption the calls at times `rest` are a new generation (a fresh reference
    from its first step), and stats counted one interruption."""
    ref = EagerTaylorSeer(model, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL))
    with torch.no_grad():
        for step, t in enumerate(rest):
            t = torch.tensor(t)
            torch.testing.assert_close(compiled(x, t), ref(x, t), **TOL,
                                       msg=lambda m: f"step {step}: {m}")
    assert ts_compile.stats(compiled)["interrupted"] == 1


def test_exception_during_a_retrace_resets_the_generation():
    model, x, compiled = _interruptible()
    with torch.no_grad():
        for t in times(10)[:5]:
            compiled(x, torch.tensor(t))
        bad = torch.randn(2, 3, SPEC.width + 1)  # a new shape: Dynamo retraces, and fails
        with pytest.raises(Exception) as info:
            compiled(bad, torch.tensor(0.4))
        assert "GraphRuntime" not in "".join(str(f) for f in info.traceback)
    # The next generation, no reset, the same times as the cut one (no time went back):
    _assert_a_fresh_generation(compiled, model, x, times(10)[5:])


def test_exception_between_steps_inside_a_generation_block_resets():
    model, x, compiled = _interruptible()
    with torch.no_grad():
        with pytest.raises(KeyError), ts_compile.generation(compiled):
            for t in times(10)[:4]:
                compiled(x, torch.tensor(t))
            raise KeyError("the user's loop")
    _assert_a_fresh_generation(compiled, model, x, times(10)[4:])


# ------------------------------------------------------------------------------------------
# row 6: batch 1 -> 2 -> 1 in one generation
# ------------------------------------------------------------------------------------------
def test_coming_back_to_an_earlier_shape_never_resumes_its_old_state():
    model = build_model(SPEC)
    compiled = compile_ts(model, order=1, interval=4, warmup=1, fullgraph=False)
    ref = EagerTaylorSeer(model, block_paths(SPEC), 1, official_schedule(1, 4))
    ts = [torch.tensor(t) for t in times(16)]
    x1, x2 = make_inputs(SPEC, batch=1), make_inputs(SPEC, batch=2)
    with torch.no_grad():
        for t in ts[:3]:
            compiled(x1, t)
        with pytest.warns(UserWarning, match="changed in the middle of a generation"):
            for t in ts[3:14]:
                compiled(x2, t)
        for t in ts[:14]:  # the reference of batch 1 with the same history: steps 0..13
            ref(x1, t)
        ref.tables, ref.last_computed = {}, None  # dropped: the next step is computed
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step, t in enumerate(ts[14:]):
                torch.testing.assert_close(compiled(x1, t), ref(x1, t), **TOL,
                                           msg=lambda m: f"step {14 + step}: {m}")
    assert ref.computed_steps[-1] == 14  # the step back on batch 1 computed


# ------------------------------------------------------------------------------------------
# row 7: many compiled copies of one model class
# ------------------------------------------------------------------------------------------
def test_32_compiled_copies_each_forecast_with_their_own_state():
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    copies = [build_model(ModelSpec(width=8, lists=(2, 2), seed=s)) for s in range(32)]
    x = make_inputs(SPEC)
    compiled = [compile_ts(m, order=ORDER, interval=INTERVAL, warmup=WARMUP) for m in copies]
    refs = [EagerTaylorSeer(m, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL))
            for m in copies]
    with torch.no_grad():
        for step, t in enumerate(times(6)):
            t = torch.tensor(t)
            for k in range(32):  # interleaved: copy 0 step s, copy 1 step s, ...
                torch.testing.assert_close(compiled[k](x, t), refs[k](x, t), **TOL,
                                           msg=lambda m: f"copy {k} step {step}: {m}")
    for c in compiled:
        stats = ts_compile.stats(c)
        assert stats["graphs"] == 1 and stats["forecast_steps"] == 6 - len(refs[0].computed_steps)
    # One compiled graph serves them all: Dynamo's recompile limit is not spent per copy.
    assert len(_debug_get_cache_entry_list(type(copies[0]).forward.__code__)) == 1


def test_a_copy_sharing_a_graph_joins_diffusers_protocol_itself():
    # The second FLUX copy never compiles (it runs the first copy's graph); its first call, inside
    # its own cache_context, must still be placed in its own "cond" state, and the pipeline's reset
    # of one copy must not touch the other.
    from .diffusers_models import tiny_flux

    (model_a, make_kwargs), (model_b, _) = tiny_flux(seed=0), tiny_flux(seed=0)
    a, b = (compile_ts(m, order=ORDER, interval=INTERVAL, warmup=WARMUP) for m in (model_a, model_b))
    with torch.no_grad():
        for step in range(4):
            a(**make_kwargs(step, 8))
            with model_b.cache_context("cond"):
                b(**make_kwargs(step, 8))
        model_b._reset_stateful_cache()
        a(**make_kwargs(4, 8))
    stats_a, stats_b = ts_compile.stats(a), ts_compile.stats(b)
    assert stats_a["contexts"] == ["default"] and stats_b["contexts"] == ["cond"]
    assert stats_b["graphs"] == 1 and controller_of(b).compiled_frames == {}  # a's graph
    assert controller_of(a).lane().tracks["default"].step == 4  # not reset by b's pipeline reset
    assert controller_of(b).lane().tracks["cond"].step == -1


def test_copies_with_different_options_keep_different_schedules():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    a = compile_ts(model, order=ORDER, interval=2, warmup=WARMUP)
    b = compile_ts(model, order=ORDER, interval=5, warmup=WARMUP)
    with torch.no_grad():
        for t in times(10):
            a(x, torch.tensor(t))
            b(x, torch.tensor(t))
    assert ts_compile.stats(a)["computed_steps"] == 5
    assert ts_compile.stats(b)["computed_steps"] == 2


def test_model_compile_in_place_and_compiled_functions_are_placed_too():
    x = make_inputs(SPEC)
    in_place = build_model(SPEC)
    in_place.compile(**backend_kwargs(compiler="eager", interval=INTERVAL))
    inner = build_model(SPEC)
    function = compile_ts(lambda x, t: inner(x, t), interval=INTERVAL)
    with torch.no_grad():
        for compiled in (in_place, function):
            for _ in range(2):  # two generations, no reset
                for t in times(6):
                    compiled(x, torch.tensor(t))
    for compiled in (in_place, function):
        stats = ts_compile.stats(compiled)
        assert stats["time_went_back"] == 1 and stats["computed_steps"] == 2 * 2


# ------------------------------------------------------------------------------------------
# a time input on a device: decisions checked when its value arrives, later
# ------------------------------------------------------------------------------------------
class LaggedTimes(stepping.LateTimes):
    """The CUDA transport's behaviour on CPU: a time becomes readable `lag` calls later (the
    device running behind the host)."""

    def __init__(self, lag: int) -> None:
        self.lag, self.queue = lag, []
        super().__init__()

    def _start(self, value):
        self.queue.append([float(value.reshape(-1)[0]), self.lag])
        return True

    def _arrived(self):
        for entry in self.queue:
            entry[1] -= 1
        out = []
        while self.queue and self.queue[0][1] <= 0:
            out.append(self.queue.pop(0)[0])
        return out

    def forget(self):
        super().forget()
        self.queue = []


def test_device_time_mistake_is_seen_late_warned_counted_and_restarts(monkeypatch):
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP)
    with torch.no_grad():
        compiled(x, torch.tensor(1.0))
    runtime = controller_of(compiled).runtimes[0]
    runtime.clock_kind = LATE_CLOCK  # as if `t` lived on a GPU: not read on the host
    monkeypatch.setattr("ts_compile.lane.late_times_for", lambda device: LaggedTimes(lag=2))
    ts_compile.reset(compiled)
    ref = EagerTaylorSeer(model, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL))
    # Generation 1: 8 steps; generation 2 follows without reset. Its first two calls are taken
    # for steps 8 and 9 (nothing on the host shows the time went back); the check of step 8's
    # time lands at the third call, which starts a new generation (computed).
    with torch.no_grad(), pytest.warns(UserWarning, match="taken for the next step"):
        latent = x
        for t in times(8):
            t = torch.tensor(t)
            torch.testing.assert_close(compiled(latent, t), ref(latent, t), **TOL)
            latent = latent.clone()  # a new tensor each step
        gen2 = [torch.tensor(t) for t in times(8)]
        compiled(x.clone(), gen2[0])
        compiled(x.clone(), gen2[1])
        ref.reset()
        for step, t in enumerate(gen2[2:]):
            latent = x.clone()
            torch.testing.assert_close(compiled(latent, t), ref(latent, t), **TOL,
                                       msg=lambda m: f"after the restart, step {step}: {m}")
    assert ts_compile.stats(compiled)["late_mistakes"] == 1


def test_late_check_replays_decisions_in_call_order():
    late, track = LaggedTimes(lag=0), object()
    decisions = [stepping.RESTART, stepping.NEXT, stepping.NEXT, stepping.SAME, stepping.NEXT,
                 stepping.NEXT]
    values = [1.0, 0.9, 0.8, 0.7, 0.6, 0.9]  # a SAME at another time; then the time goes back
    found = []
    for value, decision in zip(values, decisions):
        late.record(torch.tensor(value), decision, track)
        found += late.mistakes()
    assert found == [("late_mistakes", "calls at different times were taken as one step's calls"),
                     ("late_mistakes", "a new generation (the time went back) was taken for the "
                                       "next step")]
