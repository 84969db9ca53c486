"""Tiny, architecture-faithful diffusers transformers (random weights, no download) and inputs.

Each builder returns ``(model, make_kwargs)``: the model in eval mode, built from a small config of
the real class with a fixed seed, and ``make_kwargs(step, num_steps)`` -> the keyword arguments of
one forward call at ``step`` (the timestep varies with the step; the latents and the conditioning
are fixed). Every call uses ``return_dict=False``; element ``[0]`` of the result is the output.

``BUILDERS`` maps a short model name to its builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# The tiny configs live in the package (the `explain` CLI uses them too); one copy.
from ts_compile.integrations.diffusers_inputs import MODEL_SPECS
from ts_compile.integrations.diffusers_inputs import flux_image_ids  # noqa: F401 (re-exported)

__all__ = ["BUILDERS", "tiny_flux", "tiny_dit", "tiny_hunyuan_video", "tiny_sd3",
           "tiny_pixart", "tiny_wan"]

Builder = Callable[[], tuple[torch.nn.Module, Callable[[int, int], dict[str, Any]]]]


def _build(cls, seed: int, **config) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # keep the caller's RNG stream untouched
        torch.manual_seed(seed)
        model = cls(**config)
    return model.eval()


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _t(step: int, num_steps: int, scale: float = 1000.0, batch: int = 1) -> torch.Tensor:
    """Timestep going linearly from `scale` down towards 0 over the generation."""
    return torch.full((batch,), scale * (1.0 - step / num_steps))


# ----------------------------------------------------------------------------------------------
# FLUX.1: 2 double-stream + 3 single-stream blocks, 64 image tokens (8x8), 8 text tokens
# ----------------------------------------------------------------------------------------------
FLUX_TINY = dict(MODEL_SPECS["FluxTransformer2DModel"].tiny)


def tiny_flux(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    model = _build(FluxTransformer2DModel, seed, **FLUX_TINY)
    g = torch.Generator().manual_seed(seed + 1)
    x, ctx, pooled = _randn(g, 1, 64, 16), _randn(g, 1, 8, 32), _randn(g, 1, 32)
    img_ids, txt_ids = flux_image_ids(8, 8), torch.zeros(8, 3)

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                    timestep=_t(step, num_steps, scale=1.0), img_ids=img_ids, txt_ids=txt_ids,
                    return_dict=False)

    return model, make_kwargs


# ----------------------------------------------------------------------------------------------
# DiT (class-conditional, adaLN-zero): batch of 2 class labels, 8x8 latent, patch 2
# ----------------------------------------------------------------------------------------------
DIT_TINY = dict(MODEL_SPECS["DiTTransformer2DModel"].tiny)


def _no_label_dropout(model: torch.nn.Module) -> None:
    from diffusers.models.embeddings import LabelEmbedding

    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0


def tiny_dit(seed: int = 0):
    from diffusers import DiTTransformer2DModel

    model = _build(DiTTransformer2DModel, seed, **DIT_TINY)
    _no_label_dropout(model)
    g = torch.Generator().manual_seed(seed + 1)
    x, labels = _randn(g, 2, 4, 8, 8), torch.tensor([3, 7])

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, timestep=_t(step, num_steps, batch=2), class_labels=labels,
                    return_dict=False)

    return model, make_kwargs


# ----------------------------------------------------------------------------------------------
# HunyuanVideo: 2 double + 2 single blocks, a 2-block token refiner, latent (1, 4, 3, 8, 8)
# ----------------------------------------------------------------------------------------------
HUNYUAN_TINY = dict(MODEL_SPECS["HunyuanVideoTransformer3DModel"].tiny)


def tiny_hunyuan_video(seed: int = 0):
    from diffusers import HunyuanVideoTransformer3DModel

    model = _build(HunyuanVideoTransformer3DModel, seed, **HUNYUAN_TINY)
    g = torch.Generator().manual_seed(seed + 1)
    x, ctx, pooled = _randn(g, 1, 4, 3, 8, 8), _randn(g, 1, 8, 32), _randn(g, 1, 32)
    mask = torch.ones(1, 8)

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, timestep=_t(step, num_steps), encoder_hidden_states=ctx,
                    encoder_attention_mask=mask, pooled_projections=pooled, return_dict=False)

    return model, make_kwargs


# ----------------------------------------------------------------------------------------------
# SD3 (MMDiT): 3 joint blocks, the last one context_pre_only; latent (1, 4, 8, 8)
# ----------------------------------------------------------------------------------------------
SD3_TINY = dict(MODEL_SPECS["SD3Transformer2DModel"].tiny)


def tiny_sd3(seed: int = 0):
    from diffusers import SD3Transformer2DModel

    model = _build(SD3Transformer2DModel, seed, **SD3_TINY)
    g = torch.Generator().manual_seed(seed + 1)
    x, ctx, pooled = _randn(g, 1, 4, 8, 8), _randn(g, 1, 8, 32), _randn(g, 1, 32)

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                    timestep=_t(step, num_steps), return_dict=False)

    return model, make_kwargs


# ----------------------------------------------------------------------------------------------
# PixArt-alpha: adaLN-single blocks with self-attention, cross-attention to text, MLP
# ----------------------------------------------------------------------------------------------
PIXART_TINY = dict(MODEL_SPECS["PixArtTransformer2DModel"].tiny)


def tiny_pixart(seed: int = 0):
    from diffusers import PixArtTransformer2DModel

    model = _build(PixArtTransformer2DModel, seed, **PIXART_TINY)
    g = torch.Generator().manual_seed(seed + 1)
    x, ctx = _randn(g, 1, 4, 8, 8), _randn(g, 1, 8, 24)

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, encoder_hidden_states=ctx, timestep=_t(step, num_steps),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                    return_dict=False)

    return model, make_kwargs


# ----------------------------------------------------------------------------------------------
# Wan2.1: self-attention, cross-attention, FFN per block; latent (1, 4, 3, 8, 8)
# ----------------------------------------------------------------------------------------------
WAN_TINY = dict(MODEL_SPECS["WanTransformer3DModel"].tiny)


def tiny_wan(seed: int = 0):
    from diffusers import WanTransformer3DModel

    model = _build(WanTransformer3DModel, seed, **WAN_TINY)
    g = torch.Generator().manual_seed(seed + 1)
    x, ctx = _randn(g, 1, 4, 3, 8, 8), _randn(g, 1, 8, 32)

    def make_kwargs(step: int, num_steps: int) -> dict[str, Any]:
        return dict(hidden_states=x, timestep=_t(step, num_steps), encoder_hidden_states=ctx,
                    return_dict=False)

    return model, make_kwargs


BUILDERS: dict[str, Builder] = {
    "flux": tiny_flux,
    "dit": tiny_dit,
    "hunyuan_video": tiny_hunyuan_video,
    "sd3": tiny_sd3,
    "pixart": tiny_pixart,
    "wan": tiny_wan,
}
