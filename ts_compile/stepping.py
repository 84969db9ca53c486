"""Which step, branch and generation a model call belongs to, from the best signal available.

In this order:

1. What the caller says: diffusers' `cache_context(name, step_index=..., num_inference_steps=...)`,
   or `ts_compile.generation(compiled, num_steps=...)` / `ts_compile.branch(compiled, name)` in a
   hand-written loop. A call name selects a `Track` (its own steps and Taylor state); a given step
   index is trusted (one that goes back starts a new generation).
2. Otherwise, what the call's inputs show, read on the host only (no device sync):
   - the latent input (the forward's first argument) is the very tensor of the previous call,
     unchanged (same object, same version counter), and the time input is equal (or unknown):
     a second call of the same step, e.g. classifier-free guidance as two calls. It gets a branch
     of its own (own Taylor state, same step index);
   - the time input moves against the direction it has been moving (learned from the first two
     steps): a new generation;
   - after `num_steps` steps: a new generation, unless the time keeps moving the same way (the
     loop runs past `num_steps`: warned, and those steps are computed);
   - equal times with different latent tensors cannot be told apart from a second-order sampler:
     taken as two steps, and warned.
3. A time input on an accelerator cannot be read without a sync: `LateTimes` copies it into
   pinned host memory without blocking and the decisions are checked when the copies land (one or
   more calls later); one that the times contradict is warned about, counted, and the generation
   restarts.

`Track.place` is the decision; it returns an event name for the caller to count (and to warn
about, for the mistakes).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

# Events `Track.place` reports (the lane counts them in stats, and warns for the mistakes).
SECOND_CALL = "second_calls"  # a call placed in another branch of the current step
TIME_WENT_BACK = "time_went_back"  # a new generation, seen from the time input
ENDED_EARLY = "ended_early"  # ... which came before `num_steps` steps were run
RAN_PAST_END = "ran_past_end"  # the loop went on after `num_steps` steps
SAME_TIME = "same_time"  # equal times, different latent tensors: taken as two steps
REPEATED_CALLS = "repeated_calls"  # more than MAX_CALLS_PER_STEP identical calls: taken as steps
LATE_MISTAKES = "late_mistakes"  # a decision the time, read late, contradicts: warned, restarted

NEXT, SAME, RESTART = range(3)  # what a placement decided (replayed by the late check)
PLAIN_NEXT = (None, NEXT)  # the next step, nothing to note

# Classifier-free guidance makes 2 calls per step (3 with image guidance); more calls with the
# very same latent and time are a loop repeating one call (a benchmark), not branches.
MAX_CALLS_PER_STEP = 4

# Where the option's `time_input` is not an input of the model, the time is looked for under
# these names (for detection only; time="timestep"/"sigma" need the exact name).
TIME_INPUT_NAMES = ("timestep", "timesteps", "t", "time", "sigma", "sigmas")


def host_time(value: torch.Tensor) -> float:
    """The (first) value of a CPU time input (`tolist` is the cheapest read of a few numbers)."""
    value = value.tolist()
    while isinstance(value, list):
        value = value[0]
    return value


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class Clock:
    """The time input over one thread's calls (every call name): its last value, and which way it
    runs within a generation (learned from the first move, kept across generations)."""

    def __init__(self) -> None:
        self.time: float | None = None
        self.direction = 0  # +1 / -1 once learned

    def move(self, time: float | None) -> int:
        """-1, 0 or +1: how `time` moved from the last call's (0 if either is unknown)."""
        return 0 if time is None or self.time is None else _sign(time - self.time)

    def went_back(self, moved: int) -> bool:
        """A move against the direction: a new generation."""
        return moved != 0 and self.direction != 0 and moved != self.direction

    def goes_on(self, moved: int) -> bool:
        return moved != 0 and moved == self.direction

    def advance(self, time: float | None, moved: int, restarted: bool) -> None:
        if moved and not restarted:
            self.direction = moved
        self.time = time


class Track:
    """The steps of one call name in one thread: where the generation is, and what its last call
    looked like (latent tensor and time), to tell a second call of a step from the next step."""

    def __init__(self) -> None:
        self.generation = 0  # bumped by every restart; states of older generations are reset
        self.decision = NEXT  # what the last placement decided (for the late check)
        self.restart()

    def restart(self) -> None:
        """A new generation: the next call is step 0."""
        self.generation += 1
        self.step = -1  # step index of the last call (-1: none yet in this generation)
        self.branch = 0  # branch of the last call within its step
        self.calls_in_step = 0
        self.repeats = False  # identical calls seen: second calls are not detected any more
        self._latent: weakref.ref | None = None
        self._latent_version = -1
        self.time: float | None = None  # the last call's time, when known on the host

    def place(self, latent: torch.Tensor | None, time: float | None, moved: int, clock: Clock,
              given_step: int | None, num_steps: int | None, in_generation: bool,
              decided: tuple[str | None, int] | None = None) -> str | None:
        """Decide the step and branch of a call (sets `step`, `branch`, `decision`); returns an
        event.

        `latent`: the call's latent tensor (None if unknown); `time`: its time on the host (None
        if unknown); `moved`: how the time moved since the thread's last call (`clock`);
        `given_step`: a step index the caller gave; `num_steps`: the generation's length if
        known; `in_generation`: inside `ts_compile.generation`, which a call cannot end;
        `decided`: what `decide` returned for these very arguments, if already asked.
        """
        if decided is None:
            decided = self.decide(latent, time, moved, clock, given_step, num_steps, in_generation)
        event, decision = decided
        if decision == SAME and self.calls_in_step >= MAX_CALLS_PER_STEP:
            self.repeats = True
            event, decision = REPEATED_CALLS, NEXT
        if decision == SAME:
            self.branch = self.calls_in_step
            self.calls_in_step += 1
            self._remember(latent, time)
        else:
            if decision == RESTART:
                self.restart()
            self.next_step(latent, time, given_step if given_step is not None else self.step + 1)
        self.decision = decision
        return event

    def next_step(self, latent: torch.Tensor | None, time: float | None, step: int) -> None:
        """Place a call at `step`, branch 0: what a NEXT decision does (`place`, and the
        runtime's forecast shortcut after `decide` said `PLAIN_NEXT`)."""
        self.step = step
        self.branch, self.calls_in_step = 0, 1
        self.decision = NEXT
        self._remember(latent, time)

    def _remember(self, latent: torch.Tensor | None, time: float | None) -> None:
        """What the next call is compared with (a weak reference: the latent is not kept
        alive)."""
        if latent is None:
            self._latent = None
        else:
            if self._latent is None or self._latent() is not latent:
                self._latent = weakref.ref(latent)
            self._latent_version = latent._version
        self.time = time

    def decide(self, latent, time, moved, clock, given_step, num_steps,
               in_generation) -> tuple[str | None, int]:
        """`place`'s decision, without its effects: (event or None, NEXT / SAME / RESTART).
        `PLAIN_NEXT` is the next step with nothing to note."""
        if self.step < 0:
            return None, NEXT
        same_latent = (latent is not None and self._latent is not None and not self.repeats
                       and self._latent() is latent and latent._version == self._latent_version)
        if given_step is not None:  # the caller's step index
            if given_step == self.step and same_latent:
                return SECOND_CALL, SAME
            return None, (RESTART if given_step <= self.step else NEXT)
        known = time is not None and self.time is not None
        same_time = known and time == self.time
        if same_latent and (same_time or not known):  # unchanged latent, same (or unknown) time
            return SECOND_CALL, SAME
        if num_steps is not None and self.step >= num_steps - 1:  # the last step was run
            # Another call name may have run this step already (`moved` is from the thread's last
            # call): then the time goes on if it did since this name's own last call.
            own = _sign(time - self.time) if known else 0
            if in_generation or clock.goes_on(moved) or (moved == 0 and clock.goes_on(own)):
                return (RAN_PAST_END if self.step == num_steps - 1 else None), NEXT
            return None, RESTART
        if clock.went_back(moved):
            return (ENDED_EARLY if num_steps is not None else TIME_WENT_BACK), RESTART
        return (SAME_TIME if same_time and not self.repeats else None), NEXT


class LateTimes:
    """Checks placements made without the time, once the time arrives (one or more calls later).

    `record(value, decision, track)` starts moving a call's time to the host; `mistakes()` replays
    the times that have arrived, in call order, against the decisions made for them (a second
    call of a step is compared with its track's previous call, a new generation with the
    thread's previous call). The transport is `_start` / `_arrived`: `CudaTimes` copies into
    pinned memory and polls CUDA events.
    """

    def __init__(self) -> None:
        self._decisions: list[tuple[int, Any, bool]] = []  # (decision, track, gap before)
        self._gap = False
        self.forget()

    def forget(self) -> None:
        """Drop what is in flight and the history (after a restart the old calls do not matter)."""
        self._decisions.clear()
        self._gap = True
        self._last: float | None = None
        self._last_of: dict[Any, float] = {}
        self.direction = 0

    def record(self, value: torch.Tensor, decision: int, track: Any) -> None:
        if self._start(value):
            self._decisions.append((decision, track, self._gap))
            self._gap = False
        else:
            self._gap = True  # the next arrival is not compared with the one before

    def mistakes(self) -> list[tuple[str, str | None]]:
        """(event, what went wrong) for each arrived time that contradicts its decision."""
        found = []
        for time in self._arrived():
            decision, track, gap = self._decisions.pop(0)
            previous = None if gap else self._last
            own = None if gap else self._last_of.get(track)
            mistake = late_mistake(decision, time, previous, own, self.direction)
            if mistake is not None:
                found.append(mistake)
            elif previous is not None and decision == NEXT and time != previous:
                self.direction = _sign(time - previous)
            self._last = self._last_of[track] = time
        return found

    def _start(self, value: torch.Tensor) -> bool:
        raise NotImplementedError

    def _arrived(self) -> list[float]:
        raise NotImplementedError


class CudaTimes(LateTimes):
    """Each call's time copied into a slot of pinned host memory (`non_blocking`), one CUDA event
    per slot; arrived once the event has completed. A call that finds every slot busy (the
    device far behind) goes unchecked."""

    def __init__(self, slots: int = 8) -> None:
        self._host = torch.empty(slots, dtype=torch.float64, pin_memory=True)
        self._views = [self._host[i:i + 1] for i in range(slots)]
        self._events = [torch.cuda.Event() for _ in range(slots)]
        self._next = 0
        self._pending: list[int] = []  # slots in flight, oldest first
        super().__init__()

    def _start(self, value: torch.Tensor) -> bool:
        if len(self._pending) == len(self._views):
            return False
        slot = self._next
        self._next = (slot + 1) % len(self._views)
        self._views[slot].copy_(value.reshape(-1)[:1], non_blocking=True)
        self._events[slot].record()
        self._pending.append(slot)
        return True

    def _arrived(self) -> list[float]:
        out = []
        while self._pending and self._events[self._pending[0]].query():  # query: no sync
            out.append(float(self._host[self._pending.pop(0)]))
        return out

    def forget(self) -> None:
        super().forget()
        self._pending = []  # copies still in flight land in slots that will be rewritten


def late_times_for(device: torch.device) -> LateTimes | None:
    """The late reader for a time input on `device` (None where there is none: CPU is read at
    once; other accelerators are not checked)."""
    return CudaTimes() if device.type == "cuda" else None


def late_mistake(decision: int, time: float, previous: float | None, own: float | None,
                 direction: int) -> tuple[str, str | None] | None:
    """What a placement made without the time got wrong, now that it is known: (event, what),
    or None. `previous`: the thread's previous call's time; `own`: the same track's."""
    if decision == SAME:
        if own is None or time == own:
            return None
        return LATE_MISTAKES, "calls at different times were taken as one step's calls"
    if decision == NEXT and own is not None and time == own:
        return SAME_TIME, None  # as on the host: taken as two steps, warned
    if previous is None or not direction:
        return None
    moved = _sign(time - previous)
    if decision == RESTART:
        if moved == direction:
            return LATE_MISTAKES, "the loop ran past num_steps and was taken for a new generation"
        return None
    if moved and moved != direction:
        return LATE_MISTAKES, "a new generation (the time went back) was taken for the next step"
    return None
