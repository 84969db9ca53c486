"""Real diffusers transformers (tiny configs, random weights) through the backend, both cuts.

For each of FLUX, DiT, HunyuanVideo, SD3, PixArt-alpha and Wan2.1:
- cut="block": the regions found are the children of the model's top-level homogeneous module
  lists (derived here from the module tree, not from the pass); an all-compute schedule reproduces
  the uncompiled model; forecasting matches the independent eager reference at every step.
- cut="paper": the regions are the branch modules listed per block class below (written from the
  diffusers block code: the attention / cross-attention / MLP outputs taken before their gate);
  forecasting matches the eager reference with those module paths; the forecast graph still runs
  every block's modulation and residual adds and the model's final layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ts_compile
from ts_compile.api import controller_of
from ts_compile.analysis.regions import module_stack
from ts_compile.integrations.diffusers_inputs import flux_image_ids

from .conftest import compile_ts
from .diffusers_models import BUILDERS
from .reference import EagerTaylorSeer, official_schedule

MODELS = list(BUILDERS)
ORDER, INTERVAL, WARMUP, STEPS = 2, 3, 2, 8  # computed steps 0, 1, 4, 7; forecast 2, 3, 5, 6

# The paper's cut, per model, per block class: the direct children whose outputs are residual
# branches before their gate (read off the diffusers forward of each block class).
PAPER_CHILDREN = {
    # double stream: image attention + text attention (one module, two outputs), image MLP,
    # text MLP; single stream: proj_out over concat(attention, activated MLP), before `gate *`.
    "flux": {"FluxTransformerBlock": ["attn", "ff", "ff_context"],
             "FluxSingleTransformerBlock": ["proj_out"]},
    # adaLN-zero BasicTransformerBlock without cross-attention: attn1 and ff, both gated.
    "dit": {"BasicTransformerBlock": ["attn1", "ff"]},
    # same layout as FLUX.
    "hunyuan_video": {"HunyuanVideoTransformerBlock": ["attn", "ff", "ff_context"],
                      "HunyuanVideoSingleTransformerBlock": ["proj_out"]},
    # joint blocks; the last one is context_pre_only and has no ff_context (see _expected_paper).
    "sd3": {"JointTransformerBlock": ["attn", "ff", "ff_context"]},
    # adaLN-single: gated attn1, ungated cross-attention attn2 (added straight to the stream), ff.
    "pixart": {"BasicTransformerBlock": ["attn1", "attn2", "ff"]},
    # gated self-attention, ungated cross-attention, gated FFN.
    "wan": {"WanTransformerBlock": ["attn1", "attn2", "ffn"]},
}

# The model's final layer, which must still run on forecast steps.
FINAL_LAYER = {"flux": "proj_out", "dit": "proj_out_2", "hunyuan_video": "proj_out",
               "sd3": "proj_out", "pixart": "proj_out", "wan": "proj_out"}


def _expected_blocks(model: nn.Module) -> list[str]:
    """Children of every top-level nn.ModuleList attribute whose children share one class."""
    paths = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList) and len(child) >= 2 \
                and len({type(c) for c in child}) == 1:
            paths += [f"{name}.{i}" for i in range(len(child))]
    return paths


def _expected_paper(name: str, model: nn.Module) -> list[str]:
    paths = []
    for block_path in _expected_blocks(model):
        block = model.get_submodule(block_path)
        for child in PAPER_CHILDREN[name][type(block).__name__]:
            if getattr(block, child, None) is None:  # SD3's last block: context_pre_only
                assert (name, child) == ("sd3", "ff_context") and block.context_pre_only
                continue
            paths.append(f"{block_path}.{child}")
    return paths


def _out(result):
    return result[0]


class _Reference(EagerTaylorSeer):
    """The eager reference, letting a block return None beside its tensors (SD3's last,
    context_pre_only block returns `(None, hidden_states)`): the None is passed through as is."""

    def __init__(self, *args, **kwargs):
        self.none_at: dict[str, list[int]] = {}
        super().__init__(*args, **kwargs)

    def _split_output(self, path, out):
        if isinstance(out, tuple) and any(o is None for o in out):
            self.none_at[path] = [i for i, o in enumerate(out) if o is None]
            out = tuple(o for o in out if o is not None)
        return EagerTaylorSeer._split_output(path, out)

    def forecast(self, path, s):
        value = super().forecast(path, s)
        for i in self.none_at.get(path, []):
            value = value[:i] + (None,) + value[i:]
        return value


def _assert_matches_reference(model, make_kwargs, compiled, paths, rtol=1e-5):
    before = ts_compile.stats(compiled)
    reference = _Reference(model, paths, ORDER, official_schedule(WARMUP, INTERVAL))
    with torch.no_grad():
        for step in range(STEPS):
            kwargs = make_kwargs(step, STEPS)
            torch.testing.assert_close(_out(compiled(**kwargs)), _out(reference(**kwargs)),
                                       rtol=rtol, atol=1e-5, msg=lambda m: f"step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert (stats["computed_steps"] - before["computed_steps"],
            stats["forecast_steps"] - before["forecast_steps"]) == (4, 4)
    assert stats["fallbacks"] == [] and stats["skipped_regions"] == []
    return stats


@pytest.mark.parametrize("name", MODELS)
def test_block_cut_all_compute_reproduces_model(name):
    model, make_kwargs = BUILDERS[name]()
    compiled = compile_ts(model, order=ORDER, schedule=range(STEPS), cut="block")
    with torch.no_grad():
        for step in range(STEPS):
            kwargs = make_kwargs(step, STEPS)
            torch.testing.assert_close(_out(compiled(**kwargs)), _out(model(**kwargs)),
                                       rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["regions"] == _expected_blocks(model)
    assert stats["forecast_steps"] == 0 and stats["fallbacks"] == []


@pytest.mark.parametrize("name", MODELS)
def test_block_cut_forecast_matches_reference(name):
    model, make_kwargs = BUILDERS[name]()
    blocks = _expected_blocks(model)
    if name == "hunyuan_video":  # the token refiner's own blocks are embedding work, no regions
        refiner = model.context_embedder.token_refiner.refiner_blocks
        assert isinstance(refiner, nn.ModuleList) and len(refiner) == 2
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, cut="block")
    stats = _assert_matches_reference(model, make_kwargs, compiled, blocks)
    assert stats["regions"] == blocks
    assert not any(r.startswith("context_embedder") for r in stats["regions"])
    assert stats["live_outputs"] == 1  # only the last block's hidden states are read afterwards


def _forecast_graph_modules(compiled) -> list[list[str]]:
    (runtime,) = controller_of(compiled).runtimes
    return [[path for _, path, _ in module_stack(node)]
            for node in runtime.graphs.forecast.graph.nodes
            if node.op in ("call_function", "call_method", "call_module")]


@pytest.mark.parametrize("name", MODELS)
def test_paper_cut_regions_and_forecast(name):
    model, make_kwargs = BUILDERS[name]()
    expected = _expected_paper(name, model)
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, cut="paper")
    stats = _assert_matches_reference(model, make_kwargs, compiled, expected)
    assert stats["regions"] == expected

    # On forecast steps the embedders, every block's modulation / gates / residual adds and the
    # final layer still run; nothing inside a forecast branch does.
    stacks = _forecast_graph_modules(compiled)
    regions = set(expected)
    assert not any(regions & set(stack) for stack in stacks)
    for block in _expected_blocks(model):
        assert any(block in stack for stack in stacks), f"nothing of {block} runs when forecasting"
    assert any(FINAL_LAYER[name] in stack for stack in stacks)

    live = [spec.region for spec in controller_of(compiled).runtimes[0].table_specs]
    if name == "sd3":
        # The last block is context_pre_only: the text stream ends in its (forecast) attention,
        # so on forecast steps no text-stream branch output is read and none carries state.
        assert len(live) == 6 and not any(r.endswith("ff_context") for r in live)
    else:
        assert sorted(set(live)) == sorted(expected)  # every branch carries state


def test_unhandled_cut_tells_the_user():
    # A cut that matches nothing in a real model: one warning naming the cut, a plain compile that
    # still gives the model's output, and the reason in stats()["fallbacks"].
    model, make_kwargs = BUILDERS["wan"]()
    compiled = compile_ts(model, cut=[r"no_such_module\.\d+"])
    kwargs = make_kwargs(0, STEPS)
    with torch.no_grad(), pytest.warns(UserWarning, match="no_such_module"):
        out = _out(compiled(**kwargs))
    with torch.no_grad():
        torch.testing.assert_close(out, _out(model(**kwargs)))
    assert any("no_such_module" in reason for reason in ts_compile.stats(compiled)["fallbacks"])


@pytest.mark.inductor
def test_flux_paper_cut_through_inductor():
    model, make_kwargs = BUILDERS["flux"]()
    compiled = compile_ts(model, order=ORDER, interval=INTERVAL, warmup=WARMUP, cut="paper",
                          compiler="inductor")
    stats = _assert_matches_reference(model, make_kwargs, compiled,
                                      _expected_paper("flux", model), rtol=1e-4)
    assert stats["recompiles"] == 0


def test_explain_keeps_working_after_many_calls():
    from .models import ModelSpec, build_model, make_inputs

    spec = ModelSpec(width=8, lists=(2,), seed=5)
    x = make_inputs(spec)
    counts = [len(ts_compile.explain(build_model(spec), x, torch.tensor(0.5)))
              for _ in range(10)]
    assert counts == [1] * 10


def test_flux_with_dynamic_shapes_forecasts_every_block_at_two_resolutions():
    # dynamic=True turns float defaults (attention's dropout_p) into `.item()` reads that the
    # first block used to own; every block must still be a region, at any resolution.
    model, make_kwargs = BUILDERS["flux"]()
    compiled = torch.compile(model, backend="taylorseer", dynamic=True, fullgraph=True,
                             options={"compiler": "eager", "order": ORDER, "interval": INTERVAL,
                                      "warmup": WARMUP})
    paths = _expected_blocks(model)
    _assert_matches_reference(model, make_kwargs, compiled, paths)
    ts_compile.reset(compiled)

    def smaller(step, num_steps):  # 6x6 instead of 8x8 image tokens: a new size
        kwargs = make_kwargs(step, num_steps)
        return dict(kwargs, hidden_states=kwargs["hidden_states"][:, :36],
                    img_ids=flux_image_ids(6, 6))

    stats = _assert_matches_reference(model, smaller, compiled, paths)
    assert stats["regions"] == paths

