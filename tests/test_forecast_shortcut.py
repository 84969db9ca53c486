"""The runtime's forecast shortcut (runtime.py, `GraphRuntime._forecast_by_shortcut`) against its
full path: on any sequence of calls, the same outputs, bit for bit, and the same lane afterwards
(placement, branches, states, scalars, counters, events), with the shortcut or without it.

Each run of a sequence is made in a fresh thread (a fresh lane) of one compiled model; the
sequence is run once first, so that every graph it needs is compiled before the two compared
runs. Without the shortcut, `_forecast_by_shortcut` declines every call (the full path decides
everything, as before the shortcut existed).
"""

import contextlib
import threading
import types
import warnings

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

import ts_compile
from ts_compile.api import controller_of
from ts_compile.runtime import NOT_ASKED, Declined, GraphRuntime

from .conftest import compile_ts
from .models import ModelSpec, build_model

SPEC = ModelSpec(width=8, lists=(2, 2), tuple_out=True, pre_op=True, seed=5)

# One model call: how its latent relates to the last call's, how its time moves, its name
# (None: unnamed, placed from its inputs; else inside `ts_compile.branch`), and whether a
# pipeline's step index (if one is given) moves on after it.
CALLS = st.tuples(st.just("call"), st.sampled_from(["new", "same", "edited"]),
                  st.sampled_from(["down", "same", "up"]), st.sampled_from([None, "c", "u"]),
                  st.booleans())
# A run of plain steps (a new latent, the time going down, the step index moving on), with a
# second call per step (classifier-free guidance: unnamed, the same latent and time; or named
# "c" and "u") or not.
STEPS = st.tuples(st.just("steps"), st.integers(1, 8), st.sampled_from(["one", "unnamed", "named"]))
OPS = st.lists(st.one_of(
    STEPS, STEPS, CALLS,
    st.tuples(st.just("reset")),
    st.tuples(st.just("tokens"), st.sampled_from([3, 4])),
    # A pipeline's call context (diffusers' cache_context), given before each call from now on:
    # a name, maybe a step index (moving on with the steps) and a number of steps; a None name
    # ends it.
    st.tuples(st.just("context"), st.sampled_from([None, "cond", "uncond"]),
              st.none() | st.integers(0, 9), st.none() | st.integers(4, 9)),
    st.tuples(st.just("step_index"), st.integers(0, 9)),  # the pipeline's index jumps
    st.tuples(st.just("generation"), st.none() | st.integers(3, 9)),  # opens, or closes one
), min_size=1, max_size=12)


def run(compiled, ops, shortcut: bool) -> list:
    """Run `ops` in a fresh thread; per call, its output and the lane after it."""
    trace, failure = [], []

    def sample():
        try:
            trace.extend(_sample(compiled, ops))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)

    real = GraphRuntime._forecast_by_shortcut
    if not shortcut:
        GraphRuntime._forecast_by_shortcut = lambda self, shortcut, lane, args: NOT_ASKED
    try:
        worker = threading.Thread(target=sample)
        worker.start()
        worker.join()
    finally:
        GraphRuntime._forecast_by_shortcut = real
    if failure:
        raise failure[0]
    return trace


def _sample(compiled, ops) -> list:
    loop = Loop(compiled)
    with contextlib.ExitStack() as blocks, torch.no_grad():
        generation = None
        for op in ops:
            if op[0] == "reset":
                ts_compile.reset(compiled)
            elif op[0] == "tokens":
                loop.tokens = op[1]
            elif op[0] == "context":
                loop.context = None if op[1] is None else list(op[1:])
                if loop.context is None:
                    loop.controller.set_context(None)
            elif op[0] == "step_index":
                if loop.context is not None:
                    loop.context[1] = op[1]
            elif op[0] == "generation":
                if generation is None:
                    generation = blocks.enter_context(contextlib.ExitStack())
                    generation.enter_context(ts_compile.generation(compiled, num_steps=op[1]))
                else:
                    generation.close()
                    generation = None
            elif op[0] == "steps":
                _, n, calls = op
                for _ in range(n):
                    loop.time -= 0.05
                    loop.latent = _latent(loop.tokens, len(loop.trace))
                    for name in {"one": [None], "unnamed": [None, None], "named": ["c", "u"]}[calls]:
                        loop.call(name)
                    loop.next_index()
            else:
                _, how, moves, name, moves_on = op
                if how == "new" or loop.latent is None or loop.latent.shape[1] != loop.tokens:
                    loop.latent = _latent(loop.tokens, len(loop.trace))
                elif how == "edited":
                    loop.latent.mul_(1.0)  # the same tensor, edited in place: a new version
                loop.time += {"down": -0.05, "same": 0.0, "up": 0.3}[moves]
                loop.call(name)
                if moves_on:
                    loop.next_index()
    return loop.trace


class Loop:
    """A sampling loop's inputs, the pipeline context it gives (if any), and its trace: per call,
    the output and the lane after it."""

    def __init__(self, compiled) -> None:
        self.compiled, self.controller = compiled, controller_of(compiled)
        self.tokens, self.time, self.latent = 3, 1.0, None
        self.context: list | None = None  # [name, step index or None, num_steps or None]
        self.trace: list[tuple] = []

    def call(self, name: str | None) -> None:
        if self.context is not None:  # a pipeline announces every call
            context_name, index, num_steps = self.context
            self.controller.set_context(types.SimpleNamespace(
                name=context_name, step_index=index, num_inference_steps=num_steps))
        with ts_compile.branch(self.compiled, name) if name else contextlib.nullcontext():
            out = self.compiled(self.latent, torch.tensor([self.time]))
        self.trace.append((out.clone(), _lane_after(self.controller.lane())))

    def next_index(self) -> None:
        if self.context is not None and self.context[1] is not None:
            self.context[1] += 1


def _latent(tokens: int, seed: int) -> torch.Tensor:
    return torch.randn(1, tokens, SPEC.width, generator=torch.Generator().manual_seed(seed))


def _lane_after(lane) -> tuple:
    """Everything of the lane that a call's placement, state lookup or step changes (object
    identities as names and positions; the graphs are the same objects in both runs)."""
    tracks = {name: (t.generation, t.step, t.branch, t.calls_in_step, t.decision, t.time,
                     t.repeats, t._latent_version) for name, t in lane.tracks.items()}
    branches = {}
    for name, listed in lane.branches.items():
        for k, b in enumerate(listed):
            for owner in [b, *b.instances.values()]:
                states = {id(graph): (st.filled, tuple(st.nodes), st.last_step, st.generation,
                                      st is owner.latest, tuple(st.scalars.tolist()))
                          for graph, st in owner.states.items()}
                branches[name, k] = (owner.step, owner.previous_step, owner.generation, states)
    counts = {id(graph): tuple(c) for graph, c in lane.steps.items()}
    return (tracks, (lane.clock.time, lane.clock.direction), branches, counts, dict(lane.events),
            lane.branch.name if lane.branch else None, lane.step, lane.given_step,
            lane.num_steps, lane.in_generation)


def assert_same_runs(compiled, ops) -> None:
    run(compiled, ops, shortcut=True)  # compiles every graph the sequence needs
    full, short = run(compiled, ops, shortcut=False), run(compiled, ops, shortcut=True)
    assert len(full) == len(short)
    for k, ((out_full, lane_full), (out_short, lane_short)) in enumerate(zip(full, short)):
        assert torch.equal(out_full, out_short), f"call {k}: outputs differ"
        assert lane_full == lane_short, f"call {k}: the lanes differ"


@contextlib.contextmanager
def counting_shortcuts():
    """A list that gets, per call that had a shortcut to try, whether the shortcut took it."""
    taken, real = [], GraphRuntime._forecast_by_shortcut

    def counting(self, *args):
        out = real(self, *args)
        taken.append(type(out) is not Declined)
        return out

    GraphRuntime._forecast_by_shortcut = counting
    try:
        yield taken
    finally:
        GraphRuntime._forecast_by_shortcut = real


class TwoGraphs(nn.Module):
    """Two block models with a graph break between them: two graphs per call, the second one
    not placing the call (it follows the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = build_model(SPEC), build_model(SPEC)

    def forward(self, x, t):
        x = self.first(x, t)
        torch._dynamo.graph_break()
        return self.second(x, t)


@pytest.mark.parametrize("options, graph_break", [
    (dict(order=2, interval=3, warmup=2), False),
    (dict(order=1, interval=2, warmup=1, num_steps=6, cooldown=1), False),
    (dict(order=2, interval=2, warmup=1), True),
], ids=["no-num-steps", "num-steps-6-cooldown", "graph-break"])
def test_the_shortcut_changes_nothing_on_any_sequence_of_calls(options, graph_break):
    if graph_break:
        compiled = compile_ts(TwoGraphs(), fullgraph=False, **options)
    else:
        compiled = compile_ts(build_model(SPEC), **options)

    @settings(max_examples=60, deadline=None)
    @given(ops=OPS)
    # A pipeline's number of steps changes in the middle of a generation (with a cooldown, the
    # schedule kept for the old number is wrong from then on).
    @example(ops=[("context", "cond", 0, 9), ("steps", 3, "one"), ("context", "cond", 3, 4),
                  ("steps", 2, "one")])
    # New input sizes in the middle of a generation, and back.
    @example(ops=[("steps", 4, "one"), ("tokens", 4), ("steps", 3, "one"), ("tokens", 3),
                  ("steps", 3, "one")])
    # A reset, then a pipeline's step index that goes on from the last one.
    @example(ops=[("context", "cond", 0, None), ("steps", 4, "one"), ("reset",),
                  ("steps", 3, "one")])
    def check(ops):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mistakes in a sequence warn (once each)
            assert_same_runs(compiled, ops)

    with counting_shortcuts() as taken:
        check()
    # The sequences reached the shortcut, and it declined some of them.
    assert any(taken) and not all(taken), (sum(taken), len(taken))


def test_a_plain_loop_takes_the_shortcut_on_every_forecast_step_with_named_calls_too():
    """One call per step, the same after a reset, and CFG written as two calls, named or not:
    every forecast step of each call name is the shortcut's, except an unnamed second call's
    (the first steps are computed, so the full path has kept a shortcut by then), and the
    outputs are the full path's."""
    compiled = compile_ts(build_model(SPEC), order=2, interval=3, warmup=2)
    # 9 steps, warmup 2, interval 3: steps 0, 1, 4, 7 computed, 5 forecast (per call name).
    plain = [("steps", 9, "one")]
    for ops, names in ((plain, 1), ([("reset",), *plain], 1), ([("steps", 9, "named")], 2),
                       ([("steps", 9, "unnamed")], 1)):
        run(compiled, ops, shortcut=True)  # compiles
        full = run(compiled, ops, shortcut=False)
        with counting_shortcuts() as taken:
            short = run(compiled, ops, shortcut=True)
        assert sum(taken) == 5 * names, taken
        for (out_full, lane_full), (out_short, lane_short) in zip(full, short, strict=True):
            assert torch.equal(out_full, out_short) and lane_full == lane_short
