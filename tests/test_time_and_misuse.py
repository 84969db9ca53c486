"""`time="timestep"|"sigma"`, non-finite forecasts, and generations interrupted by an exception.

Forecasts in sampler time are checked against the independent eager reference fed the same time
values as Python floats (tests/reference.py, `time_of`); the device path computes them in float32
without a host sync, hence the tolerance.
"""

import math

import pytest
import torch

import ts_compile
from ts_compile.api import controller_of
from ts_compile.options import OptionError

from .conftest import compile_ts
from .models import ModelSpec, PolyModel, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SPEC = ModelSpec(width=8, lists=(3, 2), pre_op=True, between_op=True, post_op=True, seed=3)


def shifted_flow_times(steps: int, shift: float = 3.0) -> list[float]:
    """FLUX-style shifted sigmas: far from linear in the step index."""
    sigmas = [1.0 - i / steps for i in range(steps)]
    return [shift * s / (1 + (shift - 1) * s) for s in sigmas]


def ddpm_alphas_cumprod(n: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_timestep_time_matches_reference_on_shifted_schedule(order):
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    times = shifted_flow_times(16)
    compiled = compile_ts(model, order=order, interval=3, warmup=2, time="timestep",
                          time_input="t")
    reference = EagerTaylorSeer(model, block_paths(SPEC), order, official_schedule(2, 3),
                                time_of=lambda args, kwargs: float(args[1].reshape(-1)[0]))
    by_step = EagerTaylorSeer(model, block_paths(SPEC), order, official_schedule(2, 3))
    differs = 0.0
    with torch.no_grad():
        for generation in range(2):
            for step, t in enumerate(times):
                t = torch.full((2,), t)
                got, want = compiled(x, t), reference(x, t)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4,
                                           msg=lambda m: f"step {step}: {m}")
                differs = max(differs, (by_step(x, t) - want).abs().max().item())
            ts_compile.reset(compiled)
            reference.reset()
            by_step.reset()
    # On a non-uniform schedule the time variable must matter (else this test shows nothing).
    assert differs > 1e-3


def test_sigma_time_looks_up_ddpm_noise_level():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    abar = ddpm_alphas_cumprod()
    sigma = ((1 - abar) / abar).sqrt()
    timesteps = [int(v) for v in torch.linspace(999, 0, 12).round()]
    compiled = compile_ts(model, order=2, interval=3, warmup=2, time="sigma", time_input="t",
                          alphas_cumprod=abar.tolist())
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3),
                                time_of=lambda args, kwargs: float(sigma[int(args[1][0])]))
    with torch.no_grad():
        for step, t in enumerate(timesteps):
            t = torch.full((2,), t, dtype=torch.long)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"step {step}: {m}")
    assert ts_compile.stats(compiled)["forecast_steps"] > 0


def test_time_input_that_does_not_reach_the_graph_is_named():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    compiled = compile_ts(model, time="timestep")  # the argument is `t`, not `timestep`
    with torch.no_grad(), pytest.raises(Exception, match="time_input") as info:
        compiled(x, torch.tensor(1.0))
    assert "'timestep'" in str(info.value) and "L['t']" in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"time": "sigmas"}, "'step', 'timestep', 'sigma'"),
    ({"time": "sigma"}, "alphas_cumprod"),
    ({"time": "step", "alphas_cumprod": [0.5]}, "only used"),
    ({"time": "sigma", "alphas_cumprod": [0.5, 1.5]}, r"\(0, 1\]"),
    ({"time": "timestep", "time_input": "time step"}, "forward argument"),
])
def test_bad_time_options_are_rejected(options, message):
    with pytest.raises(OptionError, match=message):
        ts_compile.TaylorSeerOptions(**options)


def test_overflowing_half_forecast_falls_back_and_is_counted():
    # A fast linear trajectory in float16 (5e3 per step): computed at steps 0 and 1, the order-1
    # forecast passes fp16's maximum (65504) from step 14 on; the model itself never runs there.
    model = PolyModel(1, width=8, n_blocks=2)
    for block in model.blocks:
        block.coeffs[1].fill_(5e3)
    with torch.no_grad():  # a projection that cannot overflow itself: halves the block output
        model.proj.weight.copy_(0.5 * torch.eye(8))
        model.proj.bias.zero_()
    model = model.half()
    x = torch.randn(2, 3, 8).half()
    compiled = compile_ts(model, order=1, interval=20, warmup=2)
    with torch.no_grad():
        outs = [compiled(x, torch.tensor(float(s), dtype=torch.float16)) for s in range(16)]
    stats = ts_compile.stats(compiled)
    assert all(torch.isfinite(o).all() for o in outs)
    # Where the polynomial overflowed, the last computed value (step 1's) stands in.
    with torch.no_grad():
        torch.testing.assert_close(outs[15], model(x, torch.tensor(1.0, dtype=torch.float16)))
    assert stats["nonfinite_forecast_values"] > 0
    assert stats["nonfinite_computed_values"] == 0


def test_nonfinite_model_output_is_counted_on_computed_steps():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    compiled = compile_ts(model, order=2, interval=3, warmup=2)
    with torch.no_grad():
        compiled(x, torch.tensor(1.0))
        compiled(torch.full_like(x, float("nan")), torch.tensor(0.9))
    assert ts_compile.stats(compiled)["nonfinite_computed_values"] > 0


def test_exception_inside_a_call_starts_the_next_generation_clean():
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    compiled = compile_ts(model, order=2, interval=3, warmup=2)
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(2, 3))
    with torch.no_grad():
        for step in range(5):
            compiled(x, torch.tensor(1 - step / 10))
        runtime = controller_of(compiled).runtimes[0]
        forecast_fn = runtime.forecast_fn

        def out_of_memory(*args):
            raise torch.OutOfMemoryError("simulated")

        runtime.forecast_fn = out_of_memory  # step 5 is a forecast step
        with pytest.raises(torch.OutOfMemoryError):
            compiled(x, torch.tensor(0.5))
        runtime.forecast_fn = forecast_fn
        for step in range(10):  # no reset by the user: the new generation must start at step 0
            t = torch.tensor(1 - step / 10)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"step {step}: {m}")
    assert ts_compile.stats(compiled)["interrupted"] == 1


def test_forecast_coefficients_follow_time_differences():
    # The device-side scaling: unit-step scalars times powers of (now - last).
    from ts_compile.taylor import (apply_device_time, forecast_step_scalars, scalars_length,
                                   scalars_vector)

    order = 3
    scalars = scalars_vector(forecast_step_scalars(order, 1, 3))
    assert scalars.shape == (scalars_length(order),)
    apply_device_time(scalars, torch.tensor(0.25), torch.tensor([0.75]),
                      torch.arange(order + 1.0), computed=False)
    delta = -0.5
    expected = [delta ** i / math.factorial(i) if i < 3 else 0.0 for i in range(order + 1)]
    torch.testing.assert_close(scalars[:order + 1], torch.tensor(expected))
