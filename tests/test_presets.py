"""The official presets against a transcription of the official code, step by step.

`preset="official-flux" | "official-dit" | "official-hunyuan"` sets the official code's settings
and recursion; tests/official_taylorseer.py transcribes that code's cache logic (schedule,
`derivative_approximation` with its warm-up guard, `taylor_formula`, DiT's downward step count)
independently of ts_compile.
"""

from __future__ import annotations

import pytest
import torch

import ts_compile
from ts_compile.options import PRESETS, OptionError, TaylorSeerOptions

from .conftest import compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .official_taylorseer import OFFICIAL_DEFAULTS, OfficialTaylorSeer

SPEC = ModelSpec(width=8, lists=(2, 3), pre_op=True, between_op=True, post_op=True, seed=5)
STEPS = 20


def _compare(preset: str, variant: str, order: int | None = None) -> float:
    """Run both for STEPS steps; return the largest difference from the plain recursion (to show
    that the comparison can tell them apart)."""
    model = build_model(SPEC)
    x = make_inputs(SPEC)
    options = {} if order is None else {"order": order}
    compiled = compile_ts(model, preset=preset, **options)
    plain = compile_ts(model, preset=preset, recursion="plain", **options)
    official = OfficialTaylorSeer(model, block_paths(SPEC), variant, num_steps=STEPS,
                                  max_order=order)
    largest = 0.0
    with torch.no_grad():
        for step in range(STEPS):
            t = torch.tensor(1.0 - step / STEPS)
            expected = official(x, t)
            torch.testing.assert_close(compiled(x, t), expected, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{preset} step {step}: {m}")
            largest = max(largest, (plain(x, t) - expected).abs().max().item())
    interval, default_order, warmup = OFFICIAL_DEFAULTS[variant]
    stats = ts_compile.stats(compiled)
    computed = [s for s in range(STEPS) if s < warmup or (s - (warmup - 1)) % interval == 0]
    assert stats["computed_steps"] == len(computed)
    return largest


@pytest.mark.parametrize("preset, variant", [("official-flux", "flux"), ("official-dit", "dit"),
                                             ("official-hunyuan", "hunyuan")])
def test_presets_are_the_official_code_with_its_settings(preset, variant):
    _compare(preset, variant)


def test_official_flux_at_order_2_differs_from_the_plain_recursion():
    """The paper's FLUX row (N=6, order 2, first_enhance 3): its warm-up guard matters."""
    assert _compare("official-flux", "flux", order=2) > 1e-4  # 10x the tolerance above


@pytest.mark.parametrize("order", [2, 3])
def test_official_dit_and_hunyuan_with_other_orders(order):
    assert _compare("official-dit", "dit", order=order) < 1e-5  # plain recursion there
    assert _compare("official-hunyuan", "hunyuan", order=order) < 1e-5


def test_preset_settings_and_errors():
    settings = TaylorSeerOptions.from_preset("official-flux", order=2)
    assert (settings.interval, settings.order, settings.warmup, settings.recursion) == (
        6, 2, 3, "official-flux")
    assert settings.preset == "official-flux"
    assert set(PRESETS) == {"official-flux", "official-dit", "official-hunyuan"}
    with pytest.raises(OptionError, match="option 'preset'='flux'"):
        TaylorSeerOptions.coerce({"preset": "flux"})
    with pytest.raises(OptionError, match="option 'recursion'"):
        TaylorSeerOptions(recursion="official")
    # An artefact records every option, preset=None included: that must read back unchanged.
    for recorded in (TaylorSeerOptions(), settings):
        fields = {f: getattr(recorded, f) for f in ("interval", "order", "warmup", "recursion",
                                                     "preset")}
        assert TaylorSeerOptions.coerce(fields) == TaylorSeerOptions(**fields)
