"""Small, randomly initialised FLUX transformers for the demo and the tests (no downloads).

The model is diffusers' own `FluxTransformer2DModel`, built from a config: double-stream
`transformer_blocks`, single-stream `single_transformer_blocks`, rotary position ids, pooled text
projections, no guidance embedding. Only the sizes are small.

    model, make_step_inputs = tiny_flux(size="test")
    out = model(**make_step_inputs(step, num_steps))[0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..integrations.diffusers_inputs import MODEL_SPECS, flux_image_ids

# The toy FLUX configs, one home for the demo, the tests and the benchmarks (no guidance
# embedding; a variant is `dict(FLUX_CONFIGS[name], num_single_layers=2)`).
FLUX_CONFIGS: dict[str, dict[str, Any]] = {
    # 2 double + 3 single blocks, 2 heads of 16: `explain`'s and the sweep's tiny FLUX
    "test": {k: v for k, v in MODEL_SPECS["FluxTransformer2DModel"].tiny.items()
             if k != "guidance_embeds"},
    "demo": dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=4,
                 attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                 pooled_projection_dim=64, axes_dims_rope=(8, 12, 12)),
    # 4 heads of 32, 256-wide text: ~100 ms a step under Inductor on a 2-core CPU at 32x32
    "bench": dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                  attention_head_dim=32, num_attention_heads=4, joint_attention_dim=256,
                  pooled_projection_dim=256, axes_dims_rope=(8, 12, 12)),
}

SIZES: dict[str, dict[str, Any]] = {
    # tens of ms per step under Inductor on a 2-core CPU: 1024 image tokens (32x32) + 16 text.
    "demo": dict(grid=32, text_tokens=16, config=FLUX_CONFIGS["demo"]),
    # a few ms per step: 64 image tokens (8x8) + 8 text tokens.
    "test": dict(grid=8, text_tokens=8, config=FLUX_CONFIGS["test"]),
}


def tiny_flux(seed: int = 0, size: str = "demo"
              ) -> tuple[torch.nn.Module, Callable[[int, int], dict[str, Any]]]:
    """A random-weight FLUX transformer in eval mode and `make_step_inputs(step, num_steps)`.

    `make_step_inputs` returns the keyword arguments of one forward call at `step` of a
    `num_steps`-step rectified-flow schedule (sigma going linearly from 1 to 0), with
    `hidden_states` set to fixed noise; a sampler replaces it with its current latents. The text
    conditioning is fixed (drawn from `seed`), so every call of one generation sees the same prompt.
    """
    from diffusers import FluxTransformer2DModel

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    config = spec["config"]
    fork = torch.random.fork_rng(devices=[])
    with fork:  # model init draws from the global RNG; keep the caller's stream untouched
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(guidance_embeds=False, **config).eval()

    g = torch.Generator().manual_seed(seed + 1)
    grid, text = spec["grid"], spec["text_tokens"]
    tokens = grid * grid
    noise = torch.randn(1, tokens, config["in_channels"], generator=g)
    encoder_hidden_states = torch.randn(1, text, config["joint_attention_dim"], generator=g)
    pooled = torch.randn(1, config["pooled_projection_dim"], generator=g)
    img_ids = flux_image_ids(grid, grid)
    txt_ids = torch.zeros(text, 3)
    sigmas_cache: dict[int, torch.Tensor] = {}

    def make_step_inputs(step: int, num_steps: int) -> dict[str, Any]:
        sigmas = sigmas_cache.get(num_steps)
        if sigmas is None:
            sigmas = sigmas_cache[num_steps] = sigma_schedule(num_steps)
        return dict(hidden_states=noise, encoder_hidden_states=encoder_hidden_states,
                    pooled_projections=pooled, timestep=sigmas[step:step + 1].clone(),
                    img_ids=img_ids, txt_ids=txt_ids, return_dict=False)

    return model, make_step_inputs


def sigma_schedule(num_steps: int) -> torch.Tensor:
    """num_steps + 1 sigmas, linearly from 1 to 0 (rectified flow; the last is the clean image)."""
    return torch.linspace(1.0, 0.0, num_steps + 1)
