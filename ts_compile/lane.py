"""One thread's use of one compiled model: where its calls are, and their Taylor states.

A `Lane` holds what the caller declared (a call name from diffusers' `cache_context` or
`ts_compile.branch`, a step index, the number of steps, an open `ts_compile.generation`), one
`Track` per call name and the thread's `Clock` (stepping.py decides from them which step, branch
and generation a call is), the `Branch`es with their Taylor states (state.py), the model call in
progress (between the call boundary's begin and end, see compile_calls.py) and the counters
`stats` sums. Lanes are per thread, so two threads generating with one compiled model keep
separate generations; `current.lane` is the lane of the call running in this thread.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

from .state import Branch, TaylorState
from .stepping import (ENDED_EARLY, LATE_MISTAKES, RAN_PAST_END, REPEATED_CALLS, RESTART,
                       SAME_TIME, SECOND_CALL, TIME_WENT_BACK, Clock, LateTimes, Track,
                       host_time, late_times_for)

DEFAULT_CONTEXT = "default"
INTERRUPTED = "interrupted"
# Counted per lane, summed by `stats` (under these names).
EVENTS = (SECOND_CALL, TIME_WENT_BACK, ENDED_EARLY, RAN_PAST_END, SAME_TIME, REPEATED_CALLS,
          LATE_MISTAKES, INTERRUPTED)

# How the call's time input can be read (decided per graph from its example input's device).
NO_CLOCK, HOST_CLOCK, LATE_CLOCK = range(3)

# The lane of the model call running in this thread (set at the call boundary).
current = threading.local()


class Lane:
    """One thread's use of one compiled model (see the module docstring)."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.options = controller.options
        # Declared by the caller (diffusers' cache_context, ts_compile.generation / branch).
        self.context: str | None = None
        self.given_step: int | None = None
        self.given_num_steps: int | None = None
        self.in_generation = False
        self.tracks: dict[str, Track] = {}
        self.branches: dict[str, list[Branch]] = {}  # per call name, its branches by index
        self.clock = Clock()  # the time input over this thread's calls
        self.late: LateTimes | None = None  # its values read back from a device, checked late
        # The model call in progress.
        self.branch: Branch | None = None
        self.step = 0
        self.placed = False  # the call is placed: the graphs after a graph break follow it
        self.in_call = False  # between the call boundary's begin and end
        self._end = self.end_call
        self._ambient: BaseException | None = None
        self._prior: Lane | None = None
        self._interrupted_by: int | None = None  # id of the exception last counted (once)
        # Counters: per graph (computed, forecast) steps, and placement events.
        self.steps: dict[Any, list[int]] = {}  # per graph (GraphRuntime)
        # Per call name, what its next forecast step needs (runtime.py's forecast shortcut).
        self.shortcuts: dict[str, Any] = {}
        self.events: collections.Counter = collections.Counter()

    @property
    def num_steps(self) -> int | None:
        return self.given_num_steps or self.options.num_steps

    # -- the call boundary -----------------------------------------------------------------
    def begin_call(self) -> Callable[[], None]:
        prior = getattr(current, "lane", None)
        if self.in_call:  # the previous call never reached its end
            self.interrupt()
            prior = None if prior is self else prior
        self.in_call, self.placed = True, False
        self._ambient = sys.exc_info()[1]  # an exception being handled around the call
        self._interrupted_by = None
        self._prior, current.lane = prior, self
        return self._end

    def end_call(self) -> None:
        error = sys.exc_info()[1]  # run in Dynamo's `finally`: the exception on its way out
        current.lane, self._prior = self._prior, None
        self.in_call = False
        if error is not None and error is not self._ambient:
            self.interrupt(error)
        self._ambient = None

    def interrupt(self, error: BaseException | None = None) -> None:
        """A call raised (in a graph, in Dynamo, in a guard), or the loop did: the generation is
        over, so that the next call is not taken for step k + 1. One exception seen twice (by
        the call and by the `generation` block around it) counts once."""
        if error is None or id(error) != self._interrupted_by:
            self.events[INTERRUPTED] += 1
        self._interrupted_by = None if error is None else id(error)
        self.reset()

    # -- what the caller declares ----------------------------------------------------------
    def reset(self) -> None:
        """A new generation for every call name."""
        for track in self.tracks.values():
            track.restart()
        if self.late is not None:
            self.late.forget()
        self.clock.time = None  # the next call is compared with nothing before it
        self.given_step = None
        if not self.in_generation:  # a pipeline gives its number of steps again at each call
            self.given_num_steps = None

    def set_context(self, context: Any | None) -> None:
        if context is None:
            self.context, self.given_step = None, None
            return
        self.context = context.name
        self.given_step = getattr(context, "step_index", None)
        self.given_num_steps = getattr(context, "num_inference_steps", None) or self.given_num_steps

    def begin_generation(self, num_steps: int | None) -> None:
        self.reset()
        self.given_num_steps, self.in_generation = num_steps, True

    def end_generation(self, finished: bool) -> None:
        num_steps = self.num_steps
        if finished and num_steps is not None:
            for name, track in self.tracks.items():  # (running past the end was noted then)
                ran = track.step + 1
                if 0 < ran < num_steps:
                    where = "" if name == DEFAULT_CONTEXT else f" (branch {name!r})"
                    self._note(ENDED_EARLY,
                               f"ts_compile.generation(num_steps={num_steps}) ran {ran} steps"
                               f"{where}; the schedule's end (cooldown) assumed {num_steps}. "
                               "Pass the loop's length as num_steps.")
        self.in_generation = False
        self.reset()

    # -- placing a call --------------------------------------------------------------------
    def place(self, latent: torch.Tensor | None, clock: torch.Tensor | None,
              clock_kind: int, decided: tuple | None = None) -> None:
        """Decide the branch and step of this model call (`self.branch`, `self.step`).

        `latent`, `clock`: the call's latent and time inputs (None if the graph has none);
        `clock_kind`: how the time can be read (`HOST_CLOCK`: at once, `LATE_CLOCK`: later);
        `decided`: (time, moved, decision) that the forecast shortcut read and asked its call
        name's existing track for, with no late times pending (runtime.py), not to do it twice."""
        name = self.context or DEFAULT_CONTEXT
        track = self.tracks.get(name)
        if track is None:
            track = self.tracks[name] = Track()
            self.branches[name] = []
        if self.late is not None:
            for event, mistake in self.late.mistakes():
                self._late_mistake(event, mistake)
        if decided is None:
            time = host_time(clock) if clock_kind == HOST_CLOCK else None
            moved, made = self.clock.move(time), None
        else:
            time, moved, made = decided
        event = track.place(latent, time, moved, self.clock, self.given_step, self.num_steps,
                            self.in_generation, made)
        self.clock.advance(time, moved, track.decision == RESTART)
        if event is not None:
            self._note(event)
        if track.decision == RESTART:  # a new generation for every call name of this thread
            self._restart_others(track)
        if clock_kind == LATE_CLOCK:
            if self.late is None:
                self.late = late_times_for(clock.device)
            if self.late is not None:
                self.late.record(clock, track.decision, track)
        branches = self.branches[name]
        while len(branches) <= track.branch:
            k = len(branches)
            branches.append(Branch(name if k == 0 else f"{name}:{k}"))
        branch = branches[track.branch]
        branch.enter(track.step, track.generation)
        self.branch, self.step = branch, track.step
        self.placed = self.in_call

    def _restart_others(self, track: Track | None) -> None:
        for other in self.tracks.values():
            if other is not track and other.step >= 0:
                other.restart()

    def _note(self, event: str, message: str | None = None) -> None:
        self.events[event] += 1
        if message is None:
            message = _EVENT_WARNINGS.get(event)
            if event == TIME_WENT_BACK and self.in_generation:
                message = ("the time input went back inside one ts_compile.generation(...): a new "
                           "generation was started. Use one `with ts_compile.generation(...)` "
                           "per generation.")
            if message is None:
                return
            message = message.format(num_steps=self.num_steps)
        self.controller.warn_once(message, key=event)

    def _late_mistake(self, event: str, mistake: str | None) -> None:
        if mistake is None:  # the same event as on the host (no restart)
            self._note(event)
            return
        self.events[event] += 1
        self.controller.warn_once(
            f"the time input, read back from the device after the call, shows that {mistake}; "
            "the generation was restarted (its next step is computed). Declare the loop "
            "instead: ts_compile.generation(model, num_steps=...) around a generation and "
            "ts_compile.branch(model, name) around each call of a step.", key=event)
        self._restart_others(None)
        self.late.forget()

    # -- for stats ---------------------------------------------------------------------------
    def all_branches(self) -> list[Branch]:
        return [b for branches in self.branches.values() for b in branches]

    def all_states(self) -> list[TaylorState]:
        return [st for b in self.all_branches() for st in b.all_states()]

    def count(self, runtime: Any) -> list[int]:
        """The (computed, forecast) step counters of one graph in this lane."""
        counts = self.steps.get(runtime)
        if counts is None:
            counts = self.steps[runtime] = [0, 0]
        return counts


_EVENT_WARNINGS = {
    ENDED_EARLY: ("a generation ended before num_steps={num_steps} steps (the time input went "
                  "back up): a new generation was started, and the ended one's cooldown never "
                  "ran. Set num_steps to the loop's length."),
    RAN_PAST_END: ("the loop ran past num_steps={num_steps} (the time input kept going, or a "
                   "ts_compile.generation block was still open): the steps after it are computed. "
                   "Set num_steps to the loop's length."),
    SAME_TIME: ("two consecutive calls had the same time input but different latent tensors: "
                "they were taken as two steps. If they are two calls of one step (classifier-free "
                "guidance), pass the very same latent tensor to both, or name each call with "
                "`with ts_compile.branch(model, name):`; a sampler that evaluates twice at one "
                "time (Heun) is fine as it is."),
    REPEATED_CALLS: ("more than 4 calls with the very same latent tensor and time: taken as "
                     "consecutive steps (a loop repeating one call). Pass each step's own latent "
                     "tensor, or name the calls with ts_compile.branch / ts_compile.generation."),
}
