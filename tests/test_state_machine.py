"""A stateful property test: random sequences of calls, resets, context switches and shape
changes against the eager reference with the same semantics (one reference per call context)."""

import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ts_compile
from ts_compile.api import controller_of

from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SPEC = ModelSpec(width=8, lists=(2, 2), tuple_out=True, pre_op=True, seed=11)


class TaylorSeerMachine(RuleBasedStateMachine):
    @initialize(order=st.integers(0, 4), interval=st.integers(1, 4), warmup=st.integers(1, 3),
                num_steps=st.none() | st.integers(3, 8), time=st.sampled_from(["step", "timestep"]))
    def compile_model(self, order, interval, warmup, num_steps, time):
        torch._dynamo.reset()
        self.model = build_model(SPEC)
        options = dict(compiler="eager", order=order, interval=interval, warmup=warmup)
        if num_steps is not None:
            options["num_steps"] = num_steps
        # time="timestep": the polynomial is in the model's `t` argument, read on the device.
        self.time_of = None
        if time == "timestep":
            options.update(time="timestep", time_input="t")
            self.time_of = lambda args, kwargs: float(args[1])
        self.clock = 1.0  # strictly decreasing over all calls, like a sampler's time
        self.compiled = torch.compile(self.model, backend="taylorseer", options=options)
        self.schedule = official_schedule(warmup, interval)
        self.order, self.num_steps = order, num_steps
        self.references: dict[str, EagerTaylorSeer] = {}
        self.context = "default"
        self.tokens = 3
        self.calls = 0

    def reference(self) -> EagerTaylorSeer:
        if self.context not in self.references:
            self.references[self.context] = EagerTaylorSeer(
                self.model, block_paths(SPEC), self.order, self.schedule, time_of=self.time_of)
        return self.references[self.context]

    @rule(dt=st.floats(0.01, 0.2), n=st.integers(1, 8))
    def steps(self, dt, n):
        x = make_inputs(SPEC, tokens=self.tokens)
        reference = self.reference()
        for k in range(n):
            self.clock -= dt
            t = torch.tensor(self.clock)
            with torch.no_grad():
                got = self.compiled(x, t)
                want = reference(x, t)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            self.calls += 1
            if self.num_steps is not None and reference.step >= self.num_steps:
                reference.reset()  # the backend starts a new generation by itself

    @rule()
    def reset(self):
        ts_compile.reset(self.compiled)
        for reference in self.references.values():
            reference.reset()

    @precondition(lambda self: self.calls > 0)  # the controller exists after the first call
    @rule(name=st.sampled_from(["cond", "uncond", "default"]))
    def switch_context(self, name):
        # What diffusers' cache_context(name) does; same schedule, separate tables.
        controller_of(self.compiled).context = name
        self.context = name

    @rule(tokens=st.sampled_from([3, 4, 6]))
    def new_generation_with_shape(self, tokens):
        self.reset()
        self.tokens = tokens

    @invariant()
    def stats_are_consistent(self):
        if self.calls:
            stats = ts_compile.stats(self.compiled)
            assert stats["computed_steps"] + stats["forecast_steps"] == self.calls
            assert not stats["fallbacks"]


TaylorSeerMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=30, deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_taylorseer_state_machine = TaylorSeerMachine.TestCase
