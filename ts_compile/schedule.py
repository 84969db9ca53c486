"""Which denoising steps run the model and which are forecast.

Pure functions of the options and the step index; the runtime calls them on the host, so the
choice of graph never needs a device->host sync.
"""

from __future__ import annotations

from .options import TaylorSeerOptions


def is_computed_step(step: int, options: TaylorSeerOptions, num_steps: int | None = None) -> bool:
    """True if `step` (0-based) runs the model; False if it may be forecast.

    Official TaylorSeer rule: computed iff ``step < warmup`` or
    ``(step - (warmup - 1)) % interval == 0``, plus the last `cooldown` steps when `num_steps` is
    known (`num_steps` here, e.g. from a pipeline, overrides ``options.num_steps``). An explicit
    `schedule` overrides all of that.
    """
    num_steps = options.num_steps if num_steps is None else num_steps
    if options.adaptive is not None:
        raise ValueError("ts_compile: with options.adaptive the computed steps are chosen while "
                         "sampling, not known in advance; ts_compile.stats(compiled)['adaptive'] "
                         "lists the steps a run chose.")
    if options.schedule is not None:
        return step in options.schedule
    if step < options.warmup:
        return True
    if num_steps is not None and step >= num_steps - options.cooldown:
        return True
    return (step - (options.warmup - 1)) % options.interval == 0


def computed_steps(options: TaylorSeerOptions, num_steps: int) -> list[int]:
    """The computed step indices of a `num_steps`-step generation."""
    return [s for s in range(num_steps) if is_computed_step(s, options, num_steps)]


def flops_speedup(options: TaylorSeerOptions, num_steps: int) -> float:
    """Ideal speedup if forecast steps cost nothing: steps / computed steps."""
    return num_steps / len(computed_steps(options, num_steps))
