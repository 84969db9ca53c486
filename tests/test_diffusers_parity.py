"""Parity with diffusers' own TaylorSeer hooks (`diffusers.hooks.taylorseer_cache`).

Both implement the official TaylorSeer recursion. Given the same computed steps (diffusers'
schedule expressed through our `schedule` option), the same order, the same forecast modules and
float32 factors, a model compiled with ``backend="taylorseer"`` must give the outputs of the same
model with diffusers' hooks run eagerly, at every step of a generation.

Each test builds a tiny random-weight model (no download), hooks copy A with diffusers'
`TaylorSeerCacheConfig`, compiles copy B with our backend (eager inner compiler, fullgraph), runs
a 20-step generation with a changing timestep and latents (an Euler-like update from A's output,
fed to both), and checks at every step:

* A's and B's outputs match (tight tolerances; the observed difference is 0.0 here because both
  sum the same float32 terms in the same order);
* diffusers computes exactly the steps of our schedule (read off every hook's state);
* on forecast steps A really forecasts (its output differs from an un-hooked copy), so the
  comparison is not trivially between two full computations;
* `ts_compile.stats` lists exactly the modules diffusers hooked as regions, and counts the
  schedule's computed and forecast steps, with one graph and no recompiles.
"""

from __future__ import annotations

import copy

import pytest
import torch

import ts_compile
from ts_compile.cli.toy_models import FLUX_CONFIGS
from ts_compile.integrations.diffusers_inputs import flux_image_ids
from ts_compile.options import TaylorSeerOptions
from ts_compile.schedule import computed_steps

diffusers = pytest.importorskip("diffusers")
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel  # noqa: E402
from diffusers.hooks import HookRegistry  # noqa: E402
from diffusers.hooks.hooks import CacheContext, StateManager  # noqa: E402
from diffusers.hooks.taylorseer_cache import (  # noqa: E402
    _TAYLORSEER_CACHE_HOOK,
    TaylorSeerCacheConfig,
    TaylorSeerCacheHook,
    TaylorSeerState,
    apply_taylorseer_cache,
)
from diffusers.models.cache_utils import CacheMixin  # noqa: E402

from .conftest import compile_ts  # noqa: E402

NUM_STEPS = 20
TOL = dict(rtol=1e-5, atol=1e-5)
ORDERS = [1, 2, 3]
# (cache_interval, disable_cache_before_step): diffusers' defaults, and a denser one.
SCHEDULES = [(5, 3), (3, 1)]

FLUX_ATTN_CUT = [r"transformer_blocks\.\d+\.attn", r"single_transformer_blocks\.\d+\.attn"]
# DiT's attention modules are `attn1`: diffusers' default identifiers ("^transformer_blocks.*attn",
# full match) hook nothing on DiT, so its modules are named explicitly, on both sides.
DIT_CUT = [r"transformer_blocks\.\d+\.(attn1|ff)"]


# --------------------------------------------------------------------------------------------
# diffusers' schedule, models, inputs
# --------------------------------------------------------------------------------------------
def diffusers_schedule(num_steps: int, cache_interval: int, disable_cache_before_step: int,
                       disable_cache_after_step: int | None = None) -> frozenset[int]:
    """The steps `TaylorSeerCacheHook` computes (its rule, restated)."""
    before, after = disable_cache_before_step, disable_cache_after_step
    return frozenset(
        s for s in range(num_steps)
        if s < before or (s - before - 1) % cache_interval == 0
        or (after is not None and s >= after))


def flux_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return FluxTransformer2DModel(**FLUX_CONFIGS["test"]).eval()


def dit_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        in_channels=4, out_channels=4, num_layers=3, num_attention_heads=2, attention_head_dim=8,
        sample_size=8, patch_size=2, norm_type="ada_norm_zero", num_embeds_ada_norm=10).eval()
    for module in model.modules():
        if type(module).__name__ == "LabelEmbedding":
            module.dropout_prob = 0.0
    return model


class FluxCase:
    make_model = staticmethod(flux_model)

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x0 = torch.randn(1, 64, 16, generator=g)
        self.encoder_hidden_states = torch.randn(1, 8, 32, generator=g)
        self.pooled = torch.randn(1, 32, generator=g)
        self.img_ids = flux_image_ids(8, 8)
        self.txt_ids = torch.zeros(8, 3)

    def kwargs(self, x: torch.Tensor, step: int) -> dict:
        sigma = 1.0 - step / NUM_STEPS
        return dict(hidden_states=x, encoder_hidden_states=self.encoder_hidden_states,
                    pooled_projections=self.pooled, timestep=torch.tensor([sigma]),
                    img_ids=self.img_ids, txt_ids=self.txt_ids, return_dict=False)


class DiTCase:
    make_model = staticmethod(dit_model)

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x0 = torch.randn(2, 4, 8, 8, generator=g)
        self.class_labels = torch.tensor([1, 3])

    def kwargs(self, x: torch.Tensor, step: int) -> dict:
        t = 999 - step * (1000 // NUM_STEPS)
        return dict(hidden_states=x, timestep=torch.tensor([t, t]),
                    class_labels=self.class_labels, return_dict=False)


CASES = {"flux": FluxCase, "dit": DiTCase}


# --------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------
def taylorseer_hooks(model: torch.nn.Module) -> dict[str, TaylorSeerCacheHook]:
    """Module path -> diffusers' TaylorSeer hook, for every module it hooked."""
    hooks = {}
    for name, module in model.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry) and _TAYLORSEER_CACHE_HOOK in registry.hooks:
            hooks[name] = registry.hooks[_TAYLORSEER_CACHE_HOOK]
    return hooks


def run_parity(case_name: str, config: TaylorSeerCacheConfig, options: dict,
               expected_regions: list[str], expected_hooked: list[str] | None = None) -> float:
    """Run diffusers' hooks and our backend side by side; return the max abs difference."""
    case = CASES[case_name]()
    reference = case.make_model()
    hooked, ours = copy.deepcopy(reference), copy.deepcopy(reference)
    apply_taylorseer_cache(hooked, config)  # what `enable_cache(config)` does (DiT lacks it)
    hooks = taylorseer_hooks(hooked)
    assert sorted(hooks) == sorted(expected_hooked or expected_regions)

    schedule = diffusers_schedule(NUM_STEPS, config.cache_interval,
                                  config.disable_cache_before_step,
                                  config.disable_cache_after_step)
    compiled = compile_ts(ours, schedule=schedule, order=config.max_order, **options)

    x = case.x0.clone()
    max_diff = 0.0
    with torch.no_grad():
        for step in range(NUM_STEPS):
            kwargs = case.kwargs(x, step)
            with CacheMixin.cache_context(hooked, "cond"):  # diffusers' hooks need a context
                expected = hooked(**kwargs)[0]
            actual = compiled(**kwargs)[0]
            full = reference(**kwargs)[0]

            # diffusers' own decision at this step, read off every hook's state
            states: list[TaylorSeerState] = [h.state_manager._state_cache["cond"]
                                             for h in hooks.values()]
            assert all(s.current_step == step for s in states)
            computed = {s.last_update_step == step for s in states}
            assert computed == {step in schedule}, f"step {step}: diffusers computed={computed}"

            torch.testing.assert_close(actual, expected, **TOL,
                                       msg=lambda m: f"step {step} ({sorted(schedule)}): {m}")
            max_diff = max(max_diff, (actual - expected).abs().max().item())
            if step in schedule:
                torch.testing.assert_close(expected, full, rtol=1e-5, atol=1e-5)
            else:  # a real forecast, not the full computation
                assert (expected - full).abs().max().item() > 1e-4, f"step {step}"
            x = x - expected / NUM_STEPS

    stats = ts_compile.stats(compiled)
    assert sorted(stats["regions"]) == sorted(expected_regions), stats
    assert stats["skipped_regions"] == [] and stats["fallbacks"] == []
    assert stats["graphs"] == 1 and stats["recompiles"] == 0
    assert stats["computed_steps"] == len(schedule)
    assert stats["forecast_steps"] == NUM_STEPS - len(schedule)
    print(f"{case_name} {options.get('cut', 'block')} order={config.max_order} "
          f"schedule={sorted(schedule)}: max |ours - diffusers| = {max_diff:.3g}")
    return max_diff


def config(cache_interval: int, before: int, order: int, after: int | None = None,
           **kwargs) -> TaylorSeerCacheConfig:
    return TaylorSeerCacheConfig(cache_interval=cache_interval, disable_cache_before_step=before,
                                 disable_cache_after_step=after, max_order=order,
                                 taylor_factors_dtype=torch.float32, **kwargs)


FLUX_ATTN = ["transformer_blocks.0.attn", "transformer_blocks.1.attn",
             "single_transformer_blocks.0.attn", "single_transformer_blocks.1.attn",
             "single_transformer_blocks.2.attn"]
FLUX_BLOCKS = ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0",
               "single_transformer_blocks.1", "single_transformer_blocks.2"]
DIT_ATTN_FF = [f"transformer_blocks.{i}.{m}" for i in range(3) for m in ("attn1", "ff")]
DIT_BLOCKS = [f"transformer_blocks.{i}" for i in range(3)]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache_interval,before", SCHEDULES)
def test_schedule_is_diffusers_decisions(cache_interval, before):
    """Our restatement of diffusers' rule is what its hook decides, and `schedule` keeps it."""
    for after in (None, 12):
        hook = TaylorSeerCacheHook(cache_interval, before, torch.float32,
                                   StateManager(TaylorSeerState), disable_cache_after_step=after)
        hook.state_manager.set_context(CacheContext("cond"))
        decided = frozenset(s for s in range(50) if hook._measure_should_compute()[0])
        assert decided == diffusers_schedule(50, cache_interval, before, after)
        ours = TaylorSeerOptions(schedule=decided, num_steps=50)
        assert computed_steps(ours, 50) == sorted(decided)


@pytest.mark.parametrize("cache_interval,before", SCHEDULES)
@pytest.mark.parametrize("order", ORDERS)
def test_flux_attention_parity(order, cache_interval, before):
    """diffusers' default identifiers (the `attn` of every FLUX block) vs `cut` on the same."""
    run_parity("flux", config(cache_interval, before, order),
               {"cut": FLUX_ATTN_CUT}, FLUX_ATTN)


@pytest.mark.parametrize("cache_interval,before", SCHEDULES)
@pytest.mark.parametrize("order", ORDERS)
def test_dit_attention_ff_parity(order, cache_interval, before):
    run_parity("dit", config(cache_interval, before, order, cache_identifiers=DIT_CUT),
               {"cut": DIT_CUT}, DIT_ATTN_FF)


@pytest.mark.parametrize("case_name,identifiers,regions", [
    ("flux", [r"transformer_blocks\.\d+", r"single_transformer_blocks\.\d+"], FLUX_BLOCKS),
    ("dit", [r"transformer_blocks\.\d+"], DIT_BLOCKS),
])
def test_whole_block_parity(case_name, identifiers, regions):
    """diffusers hooking whole blocks vs our default cut="block" (state only for live outputs),
    with a cool-down (disable_cache_after_step) as well."""
    run_parity(case_name, config(4, 2, 2, after=16, cache_identifiers=identifiers),
               {}, regions)


def test_flux_lite_mode_parity():
    """diffusers' lite mode forecasts `proj_out` and makes every block return zeros on forecast
    steps; those zeros only feed `proj_out`'s (forecast) input, so the output is the forecast of
    `proj_out` alone: exactly our cut=["proj_out"], whose forecast graph drops the blocks."""
    run_parity("flux", config(5, 3, 2, use_lite_mode=True), {"cut": [r"proj_out"]},
               ["proj_out"], expected_hooked=["proj_out"] + FLUX_BLOCKS)
