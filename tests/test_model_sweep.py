"""The every-transformer sweep (issue 12): every diffusers transformer class through the backend.

For each class of tests/model_zoo.py, `tests/model_sweep.py:sweep_one` runs a 12-step
teacher-forced loop (eager inner compiler) and this test asserts what must hold:

- no crash where plain torch.compile works;
- every step the backend computed (or ran plainly after a fallback) equals the uncompiled model
  at the same inputs, and so does every step of an all-compute schedule: bound REL_TOL relative
  (the measured difference is exactly 0 on every class that passes: the eager inner compiler runs
  the very ops Dynamo traced, in the same order);
- a second generation after `ts_compile.reset` is bitwise the first;
- forecast steps happen, unless stats() names a fallback or a skipped region;
- the output depends on the blocks (some forecast step differs from the model), so the checks
  above are not vacuous for the class's config;
- when forecasting, the regions are the blocks the class declares (diffusers' `_repeated_blocks`,
  where it has one) and every one of its top-level blocks is a region.

A representative class of every structural family runs by default (about 3 min); the rest carry
the `sweep` marker and run with `python -m pytest -m sweep tests/test_model_sweep.py` (all 73:
`-m "sweep or not sweep"`), or through benchmarks/model_sweep.py, which also writes the table of
docs/models.md (about 15 min for all classes on 2 CPU cores). Classes that fail today because of
a ts_compile bug are `xfail(strict=True)` with the cause, so a fix turns them into failures to
un-mark.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from . import model_sweep as sweep
from .model_sweep import PLAIN_FAILS, REL_TOL, sweep_one
from .model_zoo import ZOO, block_lists, build

# One class per structural family (see docs/models.md) and per failure seen, the default run
# (about 3 min on 2 CPU cores): FLUX-like double + single stream, MMDiT joint blocks,
# BasicTransformerBlock (DiT), interleaved spatial / temporal lists (Latte), Wan-like with a second
# list (VACE), CogVideoX-like, single stream with refiners (Z-Image), audio + video (LTX-2),
# separate text and visual stacks (Kandinsky 5), flex-attention block masks (Kandinsky 6 SR),
# graph breaks (Qwen-Image 2.1, HiDream, HunyuanVideo 1.5), unbacked sizes (FramePack), 1-D
# audio (ACE-Step), a UNet part (TransformerTemporalModel), linear attention (Sana).
DEFAULT = {
    "FluxTransformer2DModel", "SD3Transformer2DModel", "DiTTransformer2DModel",
    "LatteTransformer3DModel", "WanVACETransformer3DModel", "CogVideoXTransformer3DModel",
    "ZImageTransformer2DModel", "LTX2VideoTransformer3DModel", "Kandinsky5Transformer3DModel",
    "Kandinsky6SRTransformer3DModel", "QwenImage21Transformer2DModel",
    "HiDreamImageTransformer2DModel", "HunyuanVideo15Transformer3DModel",
    "HunyuanVideoFramepackTransformer3DModel", "AceStepTransformer1DModel",
    "TransformerTemporalModel", "SanaTransformer2DModel",
}

# Classes wrong or crashing because of a ts_compile bug, with the cause found in their graphs, are
# marked xfail(strict=True) here until fixed. None today: the in-place writes of CogVideoX,
# ConsisID, ACE-Step, LTX-2, Ideogram 4 and Lumina 2, the vmap nesting of AnyFlow FAR and
# Kandinsky 6 SR, FramePack's data-dependent sizes and the block-stack choice of BriaFibo and
# HunyuanVideo 1.5 were (docs/models.md).
XFAIL: dict[str, str] = {}

# Classes that plain compile handles but that may not be forecast, each with the named reason the
# backend gives (stats()["fallbacks"] / ["skipped_regions"]; FramePack's sizes are backed on torch
# 2.9, and it forecasts there). Any other class that compiles with fullgraph=True must forecast: an
# exact fallback is still a lost speed-up (Z-Image fell back once, for an autocast pair the
# region finder left outside its blocks).
NO_FORECAST = {
    "HunyuanVideoFramepackTransformer3DModel":
        "the blocks' outputs have data-dependent sizes (an unbacked symbol): computed every step",
}
# Classes whose own code breaks fullgraph (docs/models.md) and that are forecast graph by graph.
FORECAST_THROUGH_BREAKS = {
    "HiDreamImageTransformer2DModel", "HunyuanVideo15Transformer3DModel",
    "Lumina2Transformer2DModel", "OmniGenTransformer2DModel", "QwenImage21Transformer2DModel",
    "WanAnimate2Transformer3DModel",
}
# Top-level module lists a config cannot give two entries.
SINGLE_ENTRY_LISTS = {("WanAnimateTransformer3DModel", "face_adapter")}


def _params() -> list:
    params = []
    for name in ZOO:
        marks = [] if name in DEFAULT else [pytest.mark.sweep]
        if name in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[name]))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


# Exported nn.Module classes named like a transformer that the zoo leaves out, with the reason.
NOT_SWEPT = {
    "HunyuanDiT2DControlNetModel": "a ControlNet: residuals for HunyuanDiT's blocks, run beside "
                                   "the denoiser (no ControlNet is swept)",
    "HunyuanDiT2DMultiControlNetModel": "a list of HunyuanDiT ControlNets",
    "LongCatAudioDiTVae": "LongCat-AudioDiT's autoencoder: convolutional, no transformer",
}


def _exported_transformers() -> set[str]:
    """Every nn.Module class diffusers exports with "Transformer" or "DiT" in its name.

    Not only "...Model": Cosmos3OmniTransformer, LongCatAudioDiTTransformer, PriorTransformer and
    RFD4ProteinaTransformer have none, HunyuanDiT, Lumina-Next and both Stable Audio DiTs no
    "Transformer". Top-level names are lazy: only these are imported.
    """
    names = [n for n in dir(diffusers) if "Transformer" in n or "DiT" in n]
    return {n for n in names
            if isinstance(cls := getattr(diffusers, n), type) and issubclass(cls, torch.nn.Module)}


def test_zoo_has_every_diffusers_transformer():
    exported = _exported_transformers()
    missing = exported - set(ZOO) - set(NOT_SWEPT)
    assert not missing, f"add to tests/model_zoo.py (or to NOT_SWEPT, with why): {sorted(missing)}"
    gone = (set(ZOO) | set(NOT_SWEPT)) - exported
    assert not gone, f"no longer exported by diffusers, remove: {sorted(gone)}"
    assert DEFAULT <= set(ZOO) and set(XFAIL) <= set(ZOO) and set(NO_FORECAST) <= set(ZOO)
    assert FORECAST_THROUGH_BREAKS <= set(ZOO)


def test_zoo_configs_show_the_block_stack():
    # diffusers' test configs mostly have one block per list, which hides the stack; ours >= 2
    for name, entry in ZOO.items():
        model = build(entry)
        lists = block_lists(model)
        assert lists, f"{name}: no top-level module list"
        short = {k: n for k, n in lists.items() if n < 2 and (name, k) not in SINGLE_ENTRY_LISTS}
        assert not short, f"{name}: lists with fewer than 2 entries: {short}"


@pytest.mark.parametrize("name", _params())
def test_sweep(name):
    result = sweep_one(name)
    if result.status == PLAIN_FAILS:
        pytest.skip(f"plain torch.compile fails on the model itself: {result.reason}")
    assert not result.error, f"crash where plain compile works: {result.error}\n{result.trace}"
    assert not result.wrong_steps, (
        f"computed steps {result.wrong_steps} differ from eager: step 0 rel {result.step0_rel}, "
        f"worst rel {result.computed_rel} (abs {result.computed_abs})")
    assert result.all_compute_rel <= REL_TOL, f"all-compute schedule rel {result.all_compute_rel}"
    assert result.reset_identical, "a second generation after reset differs from the first"
    if result.forecast_steps == 0:
        assert result.fallbacks or result.skipped, "nothing forecast and no reason in stats()"
        # A graph break that only an older Dynamo makes (AceStep on torch 2.9, which cannot wrap
        # a bound method there) may leave no graph with a block: a plain compile with the reason.
        # The classes whose own code breaks the graph on every torch tried must still forecast.
        assert name in NO_FORECAST or (not result.plain_fullgraph
                                       and name not in FORECAST_THROUGH_BREAKS), (
            f"nothing forecast on a class plain compile handles: {result.fallbacks} "
            f"{result.skipped}")
    else:
        assert max(result.forecast_rel) > 0, "forecasts equal the model: the blocks do not matter"
        # what is forecast is the model's block stack, as the class declares it (diffusers'
        # `_repeated_blocks`, where the class has one), and none of its blocks always runs
        assert not result.other_regions, f"regions beside the blocks: {result.other_regions}"
        assert not result.blocks_not_regions, (
            f"blocks never forecast: {result.blocks_not_regions}")


def test_sweep_measures_and_flags_a_wrong_step():
    # The sweep's own arithmetic: any difference in any output tensor is measured (relative to
    # the reference's largest value), and a computed step off by it makes the class WRONG.
    ref = (torch.tensor([1.0, -4.0]), [torch.tensor([2.0])])
    off = (torch.tensor([1.0, -4.0]), [torch.tensor([2.0 + 1e-5])])
    assert sweep._errors(ref, ref) == (0.0, 0.0)
    diff, rel = sweep._errors(off, ref)
    assert diff > 0 and rel == pytest.approx(diff / 4.0)
    assert sweep._errors((torch.ones(2),), (torch.ones(3),)) == (float("inf"), float("inf"))

    result = sweep.SweepResult("X", "image", {}, {}, plain_fullgraph=True, forecast_steps=8,
                               computed_rel=rel, step0_rel=rel, wrong_steps=[0],
                               all_compute_rel=0.0, reset_identical=True, forecast_rel=[0.1])
    sweep._classify(result)
    assert result.status == sweep.WRONG and "[0]" in result.reason
    result.wrong_steps, result.reset_identical = [], False
    sweep._classify(result)
    assert result.status == sweep.WRONG and "reset" in result.reason
