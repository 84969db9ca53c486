"""Which module list is the block stack: the one carrying the model's compute, not any repetition.

A list counts when its children run attention or the model declares their class as its block
(diffusers' `_repeated_blocks` / `_no_split_modules`); then one block is enough (diffusers' tiny
test configs have one per list). A repeated projection beside the blocks is not a block stack.
When the model's own graph breaks split the blocks across graphs, each graph forecasts its part.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import ts_compile
from ts_compile.integrations.diffusers_inputs import MODEL_SPECS, build_model, example_inputs

from .conftest import compile_ts


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


class Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(width), Mlp(width)

    def forward(self, x, t):
        x = x + self.attn(x)
        return x + self.mlp(x) * torch.cos(t)


class MlpBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = Mlp(width)

    def forward(self, x, t):
        return x + self.mlp(x) * torch.cos(t)


class Projection(nn.Module):
    """One Linear in a wrapper, one per block (BriaFibo's `caption_projection`)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)

    def forward(self, x):
        return self.linear(x)


class Model(nn.Module):
    def __init__(self, block_cls, blocks: int = 2, width: int = 8, projections: bool = False,
                 graph_breaks: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.graph_breaks = graph_breaks
        self.blocks = nn.ModuleList(block_cls(width) for _ in range(blocks))
        self.projections = nn.ModuleList(Projection(width) for _ in range(blocks)) if projections else None
        self.out = nn.Linear(width, width)

    def forward(self, x, context, t):
        if self.graph_breaks:  # straight-line code Dynamo can resume after each break
            x = self.blocks[0](x, t)
            torch._dynamo.graph_break()  # what a model's own print / .item() / untraceable call does
            x = self.blocks[1](x, t)
            torch._dynamo.graph_break()
            x = self.blocks[2](x, t)
            return self.out(x)
        for i, block in enumerate(self.blocks):
            if self.projections is not None:
                x = x + self.projections[i](context)
            x = block(x, t)
        return self.out(x)


class DeclaredMlpModel(Model):
    _no_split_modules = ["MlpBlock"]


def _inputs():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(2, 6, 8, generator=generator), torch.randn(2, 6, 8, generator=generator)


def _run(compiled, model, steps: int = 6):
    """Run `steps` calls; computed steps must equal the model exactly."""
    x, context = _inputs()
    computed = []
    with torch.no_grad():
        for step in range(steps):
            t = torch.tensor(1.0 - step / steps)
            before = ts_compile.stats(compiled)["computed_steps"]
            out = compiled(x, context, t)
            if ts_compile.stats(compiled)["computed_steps"] > before:
                torch.testing.assert_close(out, model(x, context, t), rtol=0, atol=0)
                computed.append(step)
    return computed


def test_a_repeated_projection_beside_the_blocks_is_not_the_block_stack():
    model = Model(Block, projections=True).eval()
    compiled = compile_ts(model, interval=2)
    _run(compiled, model)
    stats = ts_compile.stats(compiled)
    assert stats["regions"] == ["blocks.0", "blocks.1"]
    assert stats["forecast_steps"] > 0


def test_a_single_attention_block_is_a_block_stack():
    model = Model(Block, blocks=1).eval()
    compiled = compile_ts(model, interval=2)
    _run(compiled, model)
    assert ts_compile.stats(compiled)["regions"] == ["blocks.0"]


def test_a_single_mlp_block_counts_only_when_the_model_declares_it():
    declared = DeclaredMlpModel(MlpBlock, blocks=1).eval()
    compiled = compile_ts(declared, interval=2)
    _run(compiled, declared)
    assert ts_compile.stats(compiled)["regions"] == ["blocks.0"]

    torch._dynamo.reset()
    undeclared = Model(MlpBlock, blocks=1).eval()
    compiled = compile_ts(undeclared, interval=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(compiled, undeclared)
    stats = ts_compile.stats(compiled)
    assert stats["regions"] == [] and stats["forecast_steps"] == 0
    assert any("no transformer blocks" in f for f in stats["fallbacks"])
    assert any("no transformer blocks" in str(w.message) for w in caught)


def test_blocks_split_by_graph_breaks_are_forecast_in_every_graph():
    model = Model(Block, blocks=3, graph_breaks=True).eval()
    compiled = compile_ts(model, fullgraph=False, interval=2)
    computed = _run(compiled, model, steps=6)
    stats = ts_compile.stats(compiled)
    # One graph per block: each sees a list with one block in it.
    assert stats["graphs"] == 3 and stats["fallbacks"] == []
    assert stats["regions"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert computed == [0, 2, 4] and stats["forecast_steps"] > 0
    # Forecast steps agree across the graphs: the same steps were computed in all of them.
    assert stats["computed_steps"] == 3 * stats["graphs"]


@pytest.mark.parametrize("cls_name, single", [
    ("FluxTransformer2DModel", dict(num_layers=1, num_single_layers=1)),
    ("DiTTransformer2DModel", dict(num_layers=1)),
    ("HunyuanVideoTransformer3DModel", dict(num_layers=1, num_single_layers=1)),
])
def test_diffusers_tiny_configs_with_one_block_per_list_are_forecast(cls_name, single):
    spec = MODEL_SPECS[cls_name]
    model = build_model(cls_name, {**spec.tiny, **single}, device="cpu")
    kwargs = example_inputs(cls_name, model.config, spec.tiny_size, device="cpu")
    compiled = compile_ts(model, interval=2)
    with torch.no_grad():
        for step in range(4):
            # A sampling loop: each step its own latent and an earlier time.
            kwargs["hidden_states"] = kwargs["hidden_states"] * 0.9
            kwargs["timestep"] = kwargs["timestep"] * 0.8
            out = compiled(**kwargs)[0]
            if step % 2 == 0:  # computed (warm-up 1, interval 2)
                torch.testing.assert_close(out, model(**kwargs)[0], rtol=0, atol=0)
    stats = ts_compile.stats(compiled)
    lists = 2 if "num_single_layers" in single else 1
    assert len(stats["regions"]) == lists
    assert stats["forecast_steps"] == 2


class LoopBreakModel(nn.Module):
    """A graph break inside the loop over the blocks: Dynamo runs `forward` eagerly and compiles
    each block's own frame, one graph shared by every block of the list."""

    _no_split_modules = ["Block"]

    def __init__(self, blocks: int = 3, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = nn.Linear(width, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.out = nn.Linear(width, width)

    def forward(self, x, context, t):
        x = self.pre(x)
        for block in self.blocks:
            x = block(x, t)
            torch._dynamo.graph_break()  # e.g. a print or an .item() in the model's own loop
        return self.out(x)


def test_a_frame_shared_by_every_block_forecasts_each_block_from_its_own_history():
    from .reference import EagerTaylorSeer, official_schedule

    model = LoopBreakModel().eval()
    compiled = compile_ts(model, fullgraph=False, interval=3, order=2)
    reference = EagerTaylorSeer(model, ["blocks.0", "blocks.1", "blocks.2"], 2,
                                official_schedule(1, 3))
    x, context = _inputs()
    with torch.no_grad():
        for step in range(8):
            x = x * 0.9  # a sampling loop: a new latent and an earlier time each step
            t = torch.tensor(1.0 - step / 8)
            torch.testing.assert_close(compiled(x, context, t), reference(x, context, t),
                                       rtol=1e-5, atol=1e-5, msg=lambda m: f"step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert stats["regions"] == ["blocks.*"]
    # Three blocks run the one graph each step: 3 x (3 computed + 5 forecast) calls.
    assert (stats["computed_steps"], stats["forecast_steps"]) == (9, 15)
    assert stats["state_bytes"] == 3 * 3 * 2 * 6 * 8 * 4  # 3 blocks x (order + 1) rows x table


class RouterBlock(Block):
    """A block that also returns integer indices (an MoE router's top-k)."""

    def forward(self, x, t):
        x = super().forward(x, t)
        return x, x.argmax(dim=-1)


def test_a_region_with_an_integer_output_is_computed_every_step():
    class RouterModel(Model):
        def forward(self, x, context, t):
            for block in self.blocks:
                x, indices = block(x, t)
                x = x + indices.unsqueeze(-1).float() * 0.01
            return self.out(x)

    model = RouterModel(RouterBlock).eval()
    compiled = compile_ts(model, interval=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(compiled, model)
    stats = ts_compile.stats(compiled)
    assert stats["forecast_steps"] == 0
    assert all("torch.int64 tensor, not a feature" in why for _, why in stats["skipped_regions"])
