"""The two models trained here, their configs, and the FLUX-like model's packing/conditioning.

DiT: diffusers' `DiTTransformer2DModel` as in shared/reference/quality.md (16 tokens, 2.1 M params),
with diffusers' per-block label dropout switched off (labels are dropped once per sample while
training instead; id 10 is the null class used for classifier-free guidance).

FLUX-like: `FluxTransformer2DModel` (2 double-stream + 2 single-stream blocks). The 8x8 one-channel
image is packed 2x2 into 16 tokens of 4 channels exactly as `FluxPipeline._pack_latents`; the class
conditioning is two learned tables, `encoder_hidden_states` (11, T, joint_attention_dim) and
`pooled_projections` (11, pooled_projection_dim), row 10 = unconditional.
"""

from __future__ import annotations

import json
import os

import torch

NULL_CLASS = 10
NUM_CLASSES = 10

DIT_CONFIG = dict(in_channels=1, out_channels=1, num_attention_heads=4, attention_head_dim=32,
                  num_layers=6, sample_size=8, patch_size=2, norm_type="ada_norm_zero",
                  num_embeds_ada_norm=10)

FLUX_CONFIG = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2,
                   attention_head_dim=32, num_attention_heads=4, joint_attention_dim=64,
                   pooled_projection_dim=64, axes_dims_rope=(8, 12, 12), guidance_embeds=False)
FLUX_TEXT_TOKENS = 2
FLUX_SHIFT = 3.0
GUIDANCE = {"dit": 1.5, "flux": 1.5}

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKPOINTS = os.path.join(os.path.dirname(HERE), "checkpoints")


def no_label_dropout(model: torch.nn.Module) -> None:
    from diffusers.models.embeddings import LabelEmbedding

    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0


def build_dit(config: dict | None = None) -> torch.nn.Module:
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(**(config or DIT_CONFIG))
    no_label_dropout(model)
    return model


def build_flux(config: dict | None = None) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(**(config or FLUX_CONFIG))


class FluxConditioning(torch.nn.Module):
    """Learned class conditioning: one text-token sequence and one pooled vector per class."""

    def __init__(self, tokens: int, joint_dim: int, pooled_dim: int) -> None:
        super().__init__()
        self.encoder_hidden_states = torch.nn.Parameter(
            0.02 * torch.randn(NUM_CLASSES + 1, tokens, joint_dim))
        self.pooled_projections = torch.nn.Parameter(
            0.02 * torch.randn(NUM_CLASSES + 1, pooled_dim))

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder_hidden_states[labels], self.pooled_projections[labels]


# --- FluxPipeline's packing conventions, restated (no transformers import needed) -------------

FLUX_NOTES = (
    "Latents are (B, 1, 8, 8) images in [-1, 1]. They are packed into 16 tokens of 4 channels "
    "exactly as diffusers' FluxPipeline._pack_latents: "
    "x.view(B, 1, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, 16, 4); unpack with the "
    "inverse (FluxPipeline._unpack_latents at latent size 8x8). img_ids = "
    "FluxPipeline._prepare_latent_image_ids(B, 4, 4, ...) (shape (16, 3): column 1 = row, "
    "column 2 = column), txt_ids = zeros(T, 3). Class conditioning: encoder_hidden_states = "
    "conditioning['encoder_hidden_states'][label] (T, joint_attention_dim), pooled_projections = "
    "conditioning['pooled_projections'][label]; labels 0..9 are digits, 10 is the unconditional "
    "(null) row. Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * noise, the model predicts "
    "noise - x0 given timestep=sigma in [0, 1] (the transformer multiplies by 1000 itself). "
    "Sampling: FlowMatchEulerDiscreteScheduler(shift=shift) sigmas for num_steps, Euler "
    "x += (sigma_next - sigma) * v; classifier-free guidance batched: one call on "
    "cat([cond, uncond]), v = v_u + guidance_scale * (v_c - v_u).")


def save_flux(model, cond: FluxConditioning, folder: str, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    save_file({"encoder_hidden_states": cond.encoder_hidden_states.detach().float().contiguous(),
               "pooled_projections": cond.pooled_projections.detach().float().contiguous()},
              os.path.join(folder, "conditioning.safetensors"))
    sampler = {"image_size": 8, "patch": 2, "in_channels": 4, "shift": FLUX_SHIFT,
               "num_steps": 50, "guidance_scale": GUIDANCE["flux"], "cfg": "batched",
               "pixel_range": [-1, 1], "text_tokens": FLUX_TEXT_TOKENS,
               "null_class": NULL_CLASS, "notes": FLUX_NOTES}
    sampler.update(extra or {})
    with open(os.path.join(folder, "sampler.json"), "w") as f:
        json.dump(sampler, f, indent=2)


def load_flux(folder: str | None = None):
    """(model, encoder_hidden_states table, pooled table, sampler dict) in eval mode, float32."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import load_file

    folder = folder or os.path.join(CHECKPOINTS, "flux_digits")
    model = FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    cond = load_file(os.path.join(folder, "conditioning.safetensors"))
    with open(os.path.join(folder, "sampler.json")) as f:
        sampler = json.load(f)
    return model, cond["encoder_hidden_states"], cond["pooled_projections"], sampler


def load_dit(folder: str | None = None):
    from diffusers import DiTTransformer2DModel

    folder = folder or os.path.join(CHECKPOINTS, "dit_digits")
    model = DiTTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    no_label_dropout(model)
    with open(os.path.join(folder, "sampler.json")) as f:
        sampler = json.load(f)
    return model, sampler
