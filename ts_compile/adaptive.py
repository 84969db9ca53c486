"""options.adaptive: which steps are computed, chosen per step from the forecast's own
truncation-error estimate instead of a fixed interval.

Signal (device side). With adaptive on, the compute graph also returns the L2 norm of every row
it just wrote, a (tables, order + 1) float32 tensor (`passes.take_compute_branches`). Between two
computed steps the rows are constant, so the estimated relative error of the forecast at a
later step s is

    e(s) = max over the state's tables of  ||D_k|| * |c_k(s)| / ||D_0||

with k = the highest filled row and c_k the forecaster's coefficient of that row at s
(`taylor.Forecaster`): the size of the polynomial's last term against the feature's. Right
after the first computed step k = 0 and e = |c_0| = 1. In sampler time (options.time != "step")
c_k is evaluated at the sampler times when the time input is a CPU tensor (the host reads it
for free); with the time input on an accelerator the step-index coefficient stands in (the rows
are then in time units and the coefficient in steps: the estimate is off by the time step's
scale, so the tolerance has to be tuned for that case).

Reads (no stall per step). On CPU the norms are read right after the computed step (CPU kernels
have finished). On CUDA they are copied non-blocking into pinned memory with an event and read at
the next step's decision; if the event has not completed by then, that read waits for it (at
most one sync per computed step, counted as `syncs`). Other devices read at once (a sync).

Decision, at the first graph of a model call, for the call's branch (its other graphs take the
same decision; the estimate is the max over the branch's states): compute at step s if a state
is empty, s < warmup, s is in the cooldown (when num_steps is known), s - last_computed >=
max_interval, or (s - last_computed >= min_interval and not e(s) <= tolerance: a NaN estimate
computes); otherwise forecast. With num_steps known, no cooldown and time="step", the last step
is decided one step early: if the rule would compute it, the step before it is computed instead
and the last step is forecast from there.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .options import TaylorSeerOptions
from .taylor import Forecaster

SIGNAL_READS = "adaptive_signal_reads"  # lane.events keys, summed by `stats`
SYNCS = "adaptive_syncs"
HISTORY = 1000  # computed-step counts kept per branch (the oldest generations are dropped)


def ratios_from_norms(norms: list[list[float]]) -> list[float]:
    """max over tables of ||D_k|| / ||D_0||, per row k (0/0 = 0, x/0 = inf)."""
    if not norms:
        return []
    out = []
    for k in range(len(norms[0])):
        worst = 0.0
        for row in norms:
            top, base = row[k], row[0]
            ratio = top / base if base > 0 else (0.0 if top == 0 else math.inf)
            if math.isnan(ratio) or ratio > worst:
                worst = ratio
                if math.isnan(ratio):
                    break
        out.append(worst)
    return out


class BranchSchedule:
    """One branch's adaptive schedule in its current generation (kept on `state.Branch`)."""

    __slots__ = ("generation", "step", "compute", "last_computed", "steps", "history",
                 "last_moved")

    def __init__(self) -> None:
        self.generation = None  # of the steps below
        self.step: int | None = None  # the step decided last, and its decision
        self.compute = True
        self.last_computed: int | None = None
        self.steps: list[int] = []  # computed steps of this generation
        self.history: list[int] = []  # computed-step counts of the branch's earlier generations
        self.last_moved = False  # the last step's compute was taken one step early (_rule)

    def enter(self, generation: int) -> None:
        if generation != self.generation:
            if self.steps:
                self.history = [*self.history[-(HISTORY - 1):], len(self.steps)]
            self.generation, self.step, self.last_computed, self.steps = generation, None, None, []
            self.last_moved = False


class LateNorms:
    """One state's norms on their way to the host from a device that is not read at once: sent
    after a computed step, read at a later decision (`ready` without waiting, else `wait`)."""

    def send(self, norms: torch.Tensor) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError

    def values(self) -> list[list[float]]:
        raise NotImplementedError


class CudaNorms(LateNorms):
    """A non-blocking copy into pinned host memory, and an event recorded after it."""

    def __init__(self) -> None:
        self.host: torch.Tensor | None = None
        self.event: Any = None

    def send(self, norms: torch.Tensor) -> None:
        if self.host is None or self.host.shape != norms.shape:
            self.host = torch.empty(norms.shape, dtype=norms.dtype, pin_memory=True)
            self.event = torch.cuda.Event()
        self.host.copy_(norms, non_blocking=True)
        self.event.record()

    def ready(self) -> bool:
        return self.event.query()

    def wait(self) -> None:
        self.event.synchronize()

    def values(self) -> list[list[float]]:
        return self.host.tolist()


def late_norms_for(device: torch.device) -> LateNorms | None:
    """How norms on `device` reach the host: None = read at once (CPU: free; other devices: a
    sync, counted)."""
    return CudaNorms() if device.type == "cuda" else None


class StateSignal:
    """One state's last norms: on their way (`late`, `pending`) or read (as ratios per row)."""

    __slots__ = ("ratios", "late", "pending", "host_times")

    def __init__(self) -> None:
        self.ratios: list[float] | None = None
        self.late: LateNorms | None = None
        self.pending = False
        self.host_times: list[float] = []  # sampler times of the table's computed steps


class Adaptive:
    """The rule of one compiled model's graphs (one per GraphRuntime; holds no history)."""

    def __init__(self, options: TaylorSeerOptions, forecaster: Forecaster, device: torch.device,
                 sampler_time: bool) -> None:
        assert options.adaptive is not None
        self.options = options
        self.settings = options.adaptive
        self.device = device
        self.sampler_time = sampler_time
        self.sigma_table: torch.Tensor | None = None  # time="sigma": on the host (runtime sets)
        # Step-index coefficients (the forecaster itself in step time); sampler time: host times.
        self.steps = (forecaster if not forecaster.unit_time else
                      Forecaster(forecaster.kind, forecaster.order, forecaster.sigma))

    # -- the signal ------------------------------------------------------------------------
    def receive(self, state: Any, norms: torch.Tensor, host_time: float | None, lane: Any) -> None:
        """A computed step returned `norms` for `state` (at sampler time `host_time`, if known)."""
        signal = state.signal
        if signal is None:
            signal = state.signal = StateSignal()
        if host_time is not None:
            signal.host_times = [host_time, *signal.host_times[:state.filled - 1]]
        late = signal.late if signal.late is not None else late_norms_for(norms.device)
        if late is not None:
            signal.late, signal.pending, signal.ratios = late, True, None
            late.send(norms)
            return
        if norms.device.type != "cpu":
            lane.events[SYNCS] += 1
        signal.ratios = ratios_from_norms(norms.tolist())
        lane.events[SIGNAL_READS] += 1

    def _ratios(self, signal: StateSignal, lane: Any) -> list[float] | None:
        if signal.pending:
            if not signal.late.ready():
                signal.late.wait()
                lane.events[SYNCS] += 1
            signal.ratios = ratios_from_norms(signal.late.values())
            signal.pending = False
            lane.events[SIGNAL_READS] += 1
        return signal.ratios

    def estimate(self, state: Any, step: int, host_time: float | None, lane: Any) -> float:
        """e(step) for `state` (see the module docstring); inf when there is nothing to read."""
        signal = state.signal
        ratios = None if signal is None else self._ratios(signal, lane)
        if not ratios or state.filled == 0:
            return math.inf
        k = state.filled - 1
        if self.sampler_time and host_time is not None and len(signal.host_times) >= state.filled:
            coef = self.steps.coefficients_at(host_time, signal.host_times, state.filled)[k]
        else:
            coef = self.steps.forecast_scalars(step, state.nodes, state.filled)[k]
        return ratios[k] * abs(coef)

    # -- the decision ----------------------------------------------------------------------
    def decide(self, branch: Any, step: int, num_steps: int | None, host_time: float | None,
               lane: Any) -> bool:
        """Compute (True) or forecast this call of `branch` at `step`; the first graph of a call
        decides, the call's other graphs get the same answer."""
        plan = branch.schedule
        plan.enter(branch.generation)
        if plan.step == step:
            return plan.compute
        plan.step, plan.compute = step, self._rule(branch, step, num_steps, host_time, lane)
        return plan.compute

    def _rule(self, branch: Any, step: int, num_steps: int | None, host_time: float | None,
              lane: Any) -> bool:
        options, plan = self.options, branch.schedule
        last = plan.last_computed
        if last is None or step < options.warmup:
            return True
        if num_steps is not None and step >= num_steps - options.cooldown:
            return True
        # The last step, looked at one step early: a compute due there is taken at the step
        # before it instead, which the last step then forecasts from one step back. Computing
        # the last step itself leaves the steps before it forecast from up to max_interval back,
        # where sampling moves fastest (+1.5 to +6.3 dB in benchmarks/adaptive_bounds.py's runs
        # where it changed a decision). Step time only: the last step's sampler time is not
        # known one step early.
        ahead = (num_steps is not None and not options.cooldown and not self.sampler_time)
        if ahead and step == num_steps - 1 and plan.last_moved and last == step - 1:
            return False
        if self._due(branch, step, last, host_time, lane):
            return True
        if ahead and step == num_steps - 2 and self._due(branch, step + 1, last, None, lane):
            plan.last_moved = True
            return True
        return False

    def _due(self, branch: Any, step: int, last: int, host_time: float | None,
             lane: Any) -> bool:
        """The interval rule at `step` (see the module docstring), `last` the last computed."""
        settings = self.settings
        gap = step - last
        if gap >= settings.max_interval:
            return True
        if gap < settings.min_interval:
            return False
        states = [st for st in branch.all_states() if st.generation == branch.generation]
        if not states or any(st.filled == 0 for st in states):
            return True
        worst = max(self.estimate(st, step, host_time, lane) for st in states)
        return not worst <= settings.tolerance

    @staticmethod
    def computed(branch: Any, step: int) -> None:
        """`branch` computed `step` (by the decision, or because a state was empty)."""
        plan = branch.schedule
        plan.enter(branch.generation)
        plan.last_computed = step
        if not plan.steps or plan.steps[-1] != step:
            plan.steps.append(step)


def adaptive_stats(lanes: list[Any], own: Any | None) -> dict[str, Any]:
    """stats()["adaptive"]: the computed steps each branch's adaptive schedule picked.

    `computed_steps_per_generation`: per branch name, the computed-step count of each of its
    generations (every thread's, thread by thread; the current one last); `last_generation`:
    per branch, the computed steps of its current (or last) generation in the calling thread
    (`own`, its lane; another thread's when the calling thread has not run the model)."""
    per_generation: dict[str, list[int]] = {}
    last: dict[str, list[int]] = {}
    if own is not None and own in lanes:  # the calling thread's own steps win
        lanes = [lane for lane in lanes if lane is not own] + [own]
    reads = syncs = 0
    for lane in lanes:
        reads += lane.events[SIGNAL_READS]
        syncs += lane.events[SYNCS]
        for branch in lane.all_branches():
            plan = branch.schedule
            counts = plan.history + ([len(plan.steps)] if plan.steps else [])
            if counts:
                per_generation.setdefault(branch.name, []).extend(counts)
            if plan.steps:
                last[branch.name] = list(plan.steps)
    return {"computed_steps_per_generation": per_generation, "last_generation": last,
            "signal_reads": reads, "syncs": syncs}
