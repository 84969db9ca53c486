"""User-facing functions: `reset`, `stats`, `generation`, `branch`, `explain`."""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
from collections.abc import Iterator
from typing import Any

import torch

from ._compat import compile_isolated
from .calling import StateLayout
from .compile_calls import controller_of_compiled
from .options import TaylorSeerOptions
from .passes import NotApplicable, build_graphs, declared_block_lists
from .lane import EVENTS
from .runtime import Controller


def controller_of(compiled: Any) -> Controller:
    """The controller of a model compiled with backend="taylorseer" (or a loaded artefact)."""
    from .deploy import ExportedTaylorSeer

    if isinstance(compiled, ExportedTaylorSeer):
        return compiled.controller
    controller = controller_of_compiled(compiled)
    if controller is None:
        raise TypeError(
            f"ts_compile: expected what torch.compile(..., backend='taylorseer') returned, got "
            f"{type(compiled).__name__}; pass the compiled object, not the original model.")
    return controller


def reset(compiled: Any) -> None:
    """Start a new generation in the calling thread: the next call is step 0 and forecasts
    nothing from before."""
    controller_of(compiled).reset()


def stats(compiled: Any, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """Regions found, steps computed and forecast, bytes of Taylor state, recompiles, fallbacks,
    how calls were placed (second calls, generations detected, mistakes), interruptions.

    The counts (`COUNTERS`, and `fallbacks`) are cumulative: since the compile, over every
    generation, thread and `reset`. With `since=` an earlier `stats()` of the same model they
    are the counts since then, e.g. of one generation:

        before = ts_compile.stats(compiled)
        image = pipe(prompt, num_inference_steps=50).images[0]
        ts_compile.stats(compiled, since=before)["forecast_steps"]   # this generation's

    The other keys (graphs, regions, live outputs, state bytes, threads, ...) describe now.
    """
    found = controller_of(compiled).stats()
    return found if since is None else counts_since(found, since)


# The keys of `stats` that count (only grow); `fallbacks` grows as a list.
COUNTERS = ("computed_steps", "forecast_steps", "recompiles", "nonfinite_forecast_values",
            "nonfinite_computed_values", "collectives_skipped", *EVENTS)


def counts_since(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """`now` with its counts made relative to `before`, an earlier `stats()` of the same model."""
    if not isinstance(before, dict):
        raise TypeError(f"ts_compile.stats: since= must be an earlier ts_compile.stats() result "
                        f"(a dict), got {type(before).__name__}.")
    missing = [key for key in (*COUNTERS, "fallbacks", "collectives_skipped_by_kind")
               if key not in before]
    if missing:
        raise ValueError(f"ts_compile.stats: since= must be an earlier ts_compile.stats() result; "
                         f"it lacks {', '.join(missing)}.")
    later = {**now, **{key: now[key] - before[key] for key in COUNTERS}}
    later["collectives_skipped_by_kind"] = {
        kind: n - before["collectives_skipped_by_kind"].get(kind, 0)
        for kind, n in now["collectives_skipped_by_kind"].items()}
    later["fallbacks"] = now["fallbacks"][len(before["fallbacks"]):]
    if now.get("adaptive") and before.get("adaptive"):  # its counters too; the steps are now's
        later["adaptive"] = {**now["adaptive"], **{
            key: now["adaptive"][key] - before["adaptive"][key]
            for key in ("signal_reads", "syncs")}}
    went_down = [key for key in COUNTERS if later[key] < 0]
    if went_down or now["fallbacks"][:len(before["fallbacks"])] != before["fallbacks"]:
        raise ValueError(f"ts_compile.stats: since= is not an earlier stats() of this model "
                         f"({', '.join(went_down) or 'fallbacks'} went down); take it from the "
                         "same compiled model before the calls to count.")
    return later


@contextlib.contextmanager
def generation(compiled: Any, num_steps: int | None = None) -> Iterator[None]:
    """One generation of a hand-written sampling loop, in the calling thread.

    It starts from an empty state and ends with a reset, so generations need no `reset` between
    them; with `num_steps` the schedule's end (cooldown) is known, and a loop of another length
    is warned about. Inside, each call is the next step, except second calls of a step, which
    `branch` names (or which are detected: the very same latent tensor at the same time).

        with ts_compile.generation(compiled, num_steps=50):
            for t in timesteps:
                with ts_compile.branch(compiled, "cond"):
                    v_cond = compiled(x, t, cond)
                with ts_compile.branch(compiled, "uncond"):
                    v_uncond = compiled(x, t, uncond)
                x = step(x, v_uncond + scale * (v_cond - v_uncond))
    """
    if num_steps is not None:
        if (isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral)
                or num_steps < 1):
            raise ValueError(f"ts_compile.generation: num_steps={num_steps!r} must be an int "
                             ">= 1 (the loop's length) or None.")
        num_steps = int(num_steps)
    lane = controller_of(compiled).lane()
    lane.begin_generation(num_steps)
    try:
        yield
    except BaseException as error:
        lane.interrupt(error)
        lane.end_generation(finished=False)
        raise
    lane.end_generation(finished=True)


@contextlib.contextmanager
def branch(compiled: Any, name: str) -> Iterator[None]:
    """The calls inside are branch `name` of their step (own Taylor state, same schedule), as
    diffusers' `cache_context(name)`: e.g. "cond" and "uncond" for classifier-free guidance run
    as two calls per step."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"ts_compile.branch: name={name!r} must be a non-empty string.")
    lane = controller_of(compiled).lane()
    prior = lane.context
    lane.context = name
    try:
        yield
    finally:
        lane.context = prior


@dataclasses.dataclass
class Explanation:
    """What the pass would do with a model, found without running a generation."""

    regions: list[str]
    skipped: list[tuple[str, str]]
    live_outputs: list[tuple[str, int, tuple, torch.dtype]]  # region, output index, shape, dtype
    state_bytes: int
    reason_not_applied: str | None
    guarded_graph: str
    forecaster: str = "taylor"  # options.forecaster, as `describe_forecaster` words it
    passes: list[str] = dataclasses.field(default_factory=list)  # what each pass did, in order

    def __str__(self) -> str:
        lines = []
        if self.reason_not_applied:
            lines.append(f"TaylorSeer does not apply: {self.reason_not_applied}")
        lines.append(f"regions ({len(self.regions)}): {', '.join(self.regions) or '-'}")
        for name, why in self.skipped:
            lines.append(f"  skipped {name}: {why}")
        lines.append(f"live outputs carrying state ({len(self.live_outputs)}):")
        for region, index, shape, dtype in self.live_outputs:
            lines.append(f"  {region}[{index}]  shape={list(shape)}  dtype={dtype}")
        lines.append(f"Taylor state: {self.state_bytes / 2**20:.3f} MiB")
        lines.append(f"forecaster: {self.forecaster}")
        if self.passes:
            lines.append("passes (ts_compile.passes, in order):")
            lines.extend(f"  {line}" for line in self.passes)
        if self.guarded_graph:
            lines.append("(print(explanation.guarded_graph) shows the graph with one torch.cond "
                         "per region)")
        return "\n".join(lines)


def describe_forecaster(settings: TaylorSeerOptions) -> str:
    """The forecaster and its parameter, e.g. "hermite (sigma=0.5)"."""
    if settings.forecaster == "hermite":
        return f"hermite (sigma={settings.hermite_sigma})"
    return settings.forecaster


def explain(model: torch.nn.Module, *args: Any, options: dict[str, Any] | None = None,
            **kwargs: Any) -> list[Explanation]:
    """Trace `model(*args, **kwargs)` once and report what the pass finds, one entry per graph."""
    settings = TaylorSeerOptions.coerce(options)
    found: list[Explanation] = []

    def capture(gm, example_inputs, **_):
        try:
            graphs = build_graphs(gm, settings, declared_block_lists(model))
        except NotApplicable as err:
            found.append(Explanation([], [], [], 0, str(err), ""))
            return gm
        live = [(t.region, t.output_index, t.shape, t.dtype) for t in graphs.guards.tables]
        nbytes = StateLayout.of(graphs.guards.tables, settings).nbytes()
        found.append(Explanation([r.name for r in graphs.regions], graphs.skipped, live, nbytes,
                                 None, graphs.guarded.print_readable(print_output=False),
                                 describe_forecaster(settings), graphs.reports))
        return gm

    # Isolated: explain must neither use up nor be refused by the recompile budget that the
    # model's forward shares with the user's own compiled copies.
    with torch.no_grad():
        compile_isolated(model, backend=capture, dynamic=False)(*args, **kwargs)
    if not found:
        raise RuntimeError(
            "ts_compile.explain: Dynamo handed over no graph (the model ran uncompiled, e.g. "
            "its recompile limit was reached); see TORCH_LOGS=recompiles, or call "
            "torch._dynamo.reset() first.")
    return found

