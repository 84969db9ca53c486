"""The compiled transformer inside unmodified diffusers pipelines, against the eager reference.

Tiny offline pipelines (tests/pipelines.py): FLUX (true CFG off and on: "cond" / "uncond"
contexts), HunyuanVideo (off and on, same), DiT (batched CFG: one call per step, no context, and a
transformer without diffusers' cache protocol). The reference is `ReferenceTransformer`, one
`EagerTaylorSeer` per call name, swapped in as `pipe.transformer`.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ts_compile

from .conftest import compile_ts
from .pipelines import (PlainReferenceTransformer, ReferenceTransformer, block_paths,
                        dit_pipeline, flux_pipeline, hunyuan_video_pipeline, reference_for)
from .reference import adaptive_schedule, official_schedule

ORDER, INTERVAL, WARMUP = 2, 3, 2
OPTIONS = {"compiler": "eager", "order": ORDER, "interval": INTERVAL, "warmup": WARMUP}
TOL = dict(rtol=1e-4, atol=1e-4)

CONTEXT_PIPELINES = {  # pipelines whose transformer speaks diffusers' cache protocol
    "flux": lambda: flux_pipeline(cfg=False),
    "flux-true-cfg": lambda: flux_pipeline(cfg=True),
    "hunyuan-video": lambda: hunyuan_video_pipeline(cfg=False),
    "hunyuan-video-true-cfg": lambda: hunyuan_video_pipeline(cfg=True),
}


def n_computed(num_steps: int) -> int:
    computed = official_schedule(WARMUP, INTERVAL)
    return sum(bool(computed(s)) for s in range(num_steps))


def output_of(result) -> torch.Tensor:
    """Final latents (FLUX, HunyuanVideo with output_type="latent") or images (DiT, "pt")."""
    if isinstance(result, tuple):
        return result[0]
    for name in ("images", "frames"):
        if hasattr(result, name):
            return getattr(result, name)
    raise TypeError(type(result))


def generate(pipe, make_kwargs, **overrides) -> torch.Tensor:
    with torch.no_grad():
        return output_of(pipe(**make_kwargs(**overrides)))


def compile_transformer(model, **extra):
    return torch.compile(model, backend="taylorseer", options={**OPTIONS, **extra})


def assert_forecast_changed_output(cached: torch.Tensor, plain: torch.Tensor) -> None:
    """The cache really forecasts: its output is finite and differs from the uncompiled one."""
    assert torch.isfinite(plain).all() and torch.isfinite(cached).all()
    assert plain.shape == cached.shape
    assert not torch.allclose(plain, cached, rtol=1e-3, atol=1e-3)


def ts_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "ts_compile" in str(w.message)]


@pytest.mark.parametrize("name", list(CONTEXT_PIPELINES))
def test_two_generations_match_reference_and_reset_by_pipeline(name):
    pipe, make_kwargs = CONTEXT_PIPELINES[name]()
    model = pipe.transformer
    contexts = ["cond", "uncond"] if name.endswith("true-cfg") else ["cond"]
    steps = make_kwargs()["num_inference_steps"]
    plain = generate(pipe, make_kwargs)

    reference = ReferenceTransformer(model, ORDER, WARMUP, INTERVAL)
    pipe.transformer = reference
    expected = [generate(pipe, make_kwargs) for _ in range(2)]
    # The pipeline itself resets the cache state at the end of each __call__, and names its calls.
    assert reference.reset_calls == 2
    assert reference.calls == 2 * steps * contexts

    pipe.transformer = compile_transformer(model)
    per_step = []  # (computed, forecast) after each step of each generation

    def on_step_end(pipeline, i, t, callback_kwargs):
        stats = ts_compile.stats(pipeline.transformer)
        per_step.append((stats["computed_steps"], stats["forecast_steps"]))
        return callback_kwargs

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = [generate(pipe, make_kwargs, callback_on_step_end=on_step_end) for _ in range(2)]
    assert ts_warnings(record) == []

    for generation, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"generation {generation}: {m}")
    torch.testing.assert_close(got[1], got[0], rtol=0, atol=0)  # the state was reset in between
    assert_forecast_changed_output(got[0], plain)

    stats = ts_compile.stats(pipe.transformer)
    assert stats["fallbacks"] == [] and stats["skipped_regions"] == []
    assert stats["regions"] == reference.paths
    assert stats["graphs"] == 1 and stats["recompiles"] == 0
    assert stats["contexts"] == sorted(contexts)
    assert stats["computed_steps"] == 2 * len(contexts) * n_computed(steps)
    assert stats["forecast_steps"] == 2 * len(contexts) * (steps - n_computed(steps))
    # Step by step, every context follows the schedule (both compute, or both forecast).
    computed = official_schedule(WARMUP, INTERVAL)
    previous = (0, 0)
    for k, now in enumerate(per_step):
        step = k % steps
        delta = (now[0] - previous[0], now[1] - previous[1])
        want = (len(contexts), 0) if computed(step) else (0, len(contexts))
        assert delta == want, f"generation {k // steps}, step {step}: {delta} != {want}"
        previous = now



# tolerance inf: only max_interval decides; 7 makes step 7 (the last) due, taken at step 6.
@pytest.mark.parametrize("tolerance, high", [(0.05, 4), (math.inf, 7)])
def test_adaptive_steps_inside_a_true_cfg_pipeline_match_the_reference_per_context(tolerance,
                                                                                  high):
    """options.adaptive in an unmodified FluxPipeline with true CFG: each call name decides its
    own steps from its own state, the pipeline's reset starts the next generation, and with
    `num_steps` the last step is decided one step early. The reference: one adaptive
    `EagerTaylorSeer` per name, its estimate on what the compiled state holds (the last single
    block's hidden states: the encoder half it also returns is read by nothing after it)."""
    pipe, make_kwargs = flux_pipeline(cfg=True)
    model = pipe.transformer
    steps = make_kwargs()["num_inference_steps"]
    low = 1
    reference = ReferenceTransformer(
        model, ORDER, 1, INTERVAL, adaptive=adaptive_schedule(tolerance, low, high, 1, 0, steps),
        estimate_paths=block_paths(model)[-1:], estimate_outputs=[1])
    pipe.transformer = reference
    expected = generate(pipe, make_kwargs)
    assert all(abs(e - tolerance) > 1e-3 * tolerance for e in reference.estimates
               if tolerance < math.inf), "an estimate too close to the tolerance to decide"
    options = {key: value for key, value in OPTIONS.items() if key != "interval"}
    pipe.transformer = torch.compile(model, backend="taylorseer", options={
        **options, "warmup": 1, "num_steps": steps,
        "adaptive": {"tolerance": tolerance, "min_interval": low, "max_interval": high}})
    got = [generate(pipe, make_kwargs) for _ in range(2)]
    stats = ts_compile.stats(pipe.transformer)
    chosen = stats["adaptive"]["last_generation"]
    assert chosen == reference.finished[-1], (chosen, reference.finished)
    assert stats["adaptive"]["computed_steps_per_generation"] == {
        name: [len(s)] * 2 for name, s in chosen.items()}  # the same steps both generations
    if tolerance == math.inf:
        assert chosen == {"cond": [0, 6], "uncond": [0, 6]}
    else:
        assert all(2 < len(s) < steps for s in chosen.values()), chosen  # decided both ways
    torch.testing.assert_close(got[0], expected, **TOL)
    torch.testing.assert_close(got[1], got[0], rtol=0, atol=0)


def test_dit_batched_cfg_matches_reference_and_is_reset_by_the_pipeline():
    """DiT: batched CFG (cond and uncond in one batch, one call per step, no cache_context).

    `DiTTransformer2DModel` is not a `CacheMixin`, but `DiTPipeline.__call__` still ends with
    `maybe_free_model_hooks()`, which calls `_reset_stateful_cache()` on components that have it;
    the backend gives the compiled model's instance one, so generations repeat exactly with no
    manual reset. (The plain reference wrapper has no such method, hence one generation of it.)
    """
    pipe, make_kwargs = dit_pipeline()
    model = pipe.transformer
    steps = make_kwargs()["num_inference_steps"]
    assert not hasattr(model, "_reset_stateful_cache") and not hasattr(model, "cache_context")
    plain = generate(pipe, make_kwargs)

    reference = reference_for(model, ORDER, WARMUP, INTERVAL)
    assert type(reference) is PlainReferenceTransformer
    pipe.transformer = reference
    expected = generate(pipe, make_kwargs)
    assert reference.calls == ["default"] * steps

    pipe.transformer = compile_transformer(model)
    got = [generate(pipe, make_kwargs) for _ in range(2)]
    torch.testing.assert_close(got[0], expected, **TOL)
    torch.testing.assert_close(got[1], got[0], rtol=0, atol=0)  # reset by the pipeline
    assert_forecast_changed_output(got[0], plain)

    stats = ts_compile.stats(pipe.transformer)
    assert stats["contexts"] == ["default"] and stats["fallbacks"] == []
    assert stats["regions"] == reference.paths
    assert stats["computed_steps"] == 2 * n_computed(steps)
    assert stats["forecast_steps"] == 2 * (steps - n_computed(steps))


def test_dit_with_num_steps_repeats_generations():
    """With `num_steps` the compiled DiT resets itself after the last step of each generation."""
    pipe, make_kwargs = dit_pipeline()
    model = pipe.transformer
    steps = make_kwargs()["num_inference_steps"]

    reference = reference_for(model, ORDER, WARMUP, INTERVAL)
    pipe.transformer = reference
    expected = []
    for _ in range(2):
        expected.append(generate(pipe, make_kwargs))
        reference.reset()

    pipe.transformer = compile_transformer(model, num_steps=steps)
    got = [generate(pipe, make_kwargs) for _ in range(2)]
    for generation, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"generation {generation}: {m}")
    torch.testing.assert_close(got[1], got[0], rtol=0, atol=0)
    stats = ts_compile.stats(pipe.transformer)
    assert stats["computed_steps"] == 2 * n_computed(steps)
    assert stats["forecast_steps"] == 2 * (steps - n_computed(steps))


def test_cached_output_differs_from_uncompiled_and_all_compute_schedule_does_not():
    """FLUX: the forecast changes the output (finite); computing every step reproduces it.

    (The two-generation tests check "finite and different" for every pipeline too.)"""
    pipe, make_kwargs = flux_pipeline()
    plain = generate(pipe, make_kwargs)
    model = pipe.transformer
    pipe.transformer = compile_transformer(model)
    cached = generate(pipe, make_kwargs)
    assert ts_compile.stats(pipe.transformer)["forecast_steps"] > 0
    assert_forecast_changed_output(cached, plain)
    torch._dynamo.reset()
    pipe.transformer = compile_transformer(model, interval=1)
    torch.testing.assert_close(generate(pipe, make_kwargs), plain, **TOL)
    assert ts_compile.stats(pipe.transformer)["forecast_steps"] == 0


@pytest.mark.parametrize("name", ["flux-true-cfg", "hunyuan-video"])
def test_resolution_and_step_count_change_between_generations(name):
    pipe, make_kwargs = CONTEXT_PIPELINES[name]()
    model = pipe.transformer
    contexts = 2 if name.endswith("true-cfg") else 1
    runs = [dict(height=16, width=16, num_inference_steps=8),
            dict(height=32, width=32, num_inference_steps=6),
            dict(height=16, width=16, num_inference_steps=8)]

    reference = ReferenceTransformer(model, ORDER, WARMUP, INTERVAL)
    pipe.transformer = reference
    expected = [generate(pipe, make_kwargs, **run) for run in runs]

    pipe.transformer = compile_transformer(model)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = [generate(pipe, make_kwargs, **run) for run in runs]
    # A new shape only ever arrives at a generation's first step, after the pipeline's reset.
    assert ts_warnings(record) == []
    for generation, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"generation {generation}: {m}")
    assert got[0].shape != got[1].shape
    torch.testing.assert_close(got[2], got[0], rtol=0, atol=0)

    stats = ts_compile.stats(pipe.transformer)
    assert stats["recompiles"] >= 1 and stats["fallbacks"] == []
    want = contexts * sum(n_computed(run["num_inference_steps"]) for run in runs)
    assert stats["computed_steps"] == want
    total = contexts * sum(run["num_inference_steps"] for run in runs)
    assert stats["computed_steps"] + stats["forecast_steps"] == total


def test_contexts_with_different_text_lengths_keep_their_state():
    """FLUX transformer called as a true-CFG loop does, with an uncond prompt of another length.

    The uncond call makes Dynamo recompile (automatic dynamic sizes) and from then on both
    contexts run in the new graph; the cond context must continue its history there.

    (FluxPipeline itself rejects negative embeddings of another shape; HunyuanVideoPipeline
    accepts them and shows the same bug.)
    """
    pipe, _ = flux_pipeline()
    model = pipe.transformer
    steps = 6
    x = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    texts = {name: torch.randn(1, n, 32, generator=torch.Generator().manual_seed(n))
             for name, n in (("cond", 8), ("uncond", 5))}
    pooled = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))

    def run(transformer):
        outs = []
        with torch.no_grad():
            for step in range(steps):
                t = torch.tensor([1 - step / steps])
                for name, text in texts.items():
                    with transformer.cache_context(name):
                        outs.append(transformer(
                            hidden_states=x, timestep=t, encoder_hidden_states=text,
                            pooled_projections=pooled, txt_ids=torch.zeros(text.shape[1], 3),
                            img_ids=torch.zeros(16, 3), guidance=None, return_dict=False)[0])
        return outs

    expected = run(ReferenceTransformer(model, ORDER, WARMUP, INTERVAL))
    compiled = compile_transformer(model)
    got = run(compiled)
    stats = ts_compile.stats(compiled)
    for k, (a, b) in enumerate(zip(got, expected)):
        where = f"step {k // 2} {list(texts)[k % 2]}"
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{where}: {m}")
    assert stats["computed_steps"] == 2 * n_computed(steps)


@pytest.mark.parametrize("name", ["flux", "dit"])
def test_compiled_models_can_still_be_deep_copied(name):
    # The backend joins diffusers models (a hook for FLUX, a reset method for DiT); a deep copy of
    # the module must work and must not share the compiled model's state.
    import copy

    from .diffusers_models import BUILDERS

    model, make_kwargs = BUILDERS[name]()
    compiled = compile_ts(model, order=2, interval=3, warmup=2)
    with torch.no_grad():
        compiled(**make_kwargs(0, 4))
    duplicate = copy.deepcopy(model)
    duplicate._reset_stateful_cache()  # resets nothing of the original
    assert ts_compile.stats(compiled)["computed_steps"] == 1
    with torch.no_grad():
        torch.testing.assert_close(duplicate(**make_kwargs(0, 4))[0], model(**make_kwargs(0, 4))[0])
