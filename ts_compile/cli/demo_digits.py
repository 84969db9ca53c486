"""The demo's digits: a trained FLUX-like digits checkpoint sampled with and without forecasting.

The checkpoint folder (written by the quality benchmark's training into the repository's
`benchmarks/checkpoints/flux_digits/`; given with `--checkpoint`) holds

    config.json + diffusion_pytorch_model.safetensors   FluxTransformer2DModel.save_pretrained
    conditioning.safetensors   encoder_hidden_states (11, T, joint_attention_dim) and
                               pooled_projections (11, pooled_projection_dim), float32; rows 0..9
                               are the digit classes, row 10 the unconditional one
    sampler.json               image_size 8, patch 2, in_channels 4, shift, num_steps,
                               guidance_scale, cfg ("batched" | "none"), pixel_range

Sampling follows diffusers' FluxPipeline: (B, 1, 8, 8) latents packed 2x2 into (B, 16, 4) tokens
(`_pack_latents`), `img_ids` of the 4x4 token grid, `txt_ids` zeros, FlowMatchEulerDiscreteScheduler
sigmas with the checkpoint's shift, timestep = sigma, Euler x += (sigma_next - sigma) * v, and
batched classifier-free guidance (conditional rows, then unconditional rows).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import torch

from ..integrations.diffusers_inputs import flux_image_ids
from .errors import CliError

FILES = ("config.json", "diffusion_pytorch_model.safetensors", "conditioning.safetensors",
         "sampler.json")
SAMPLER_KEYS = ("image_size", "patch", "in_channels", "shift", "num_steps", "guidance_scale",
                "cfg", "pixel_range")
NUM_CLASSES = 10
UNCOND = 10
ENV = "TS_COMPILE_CHECKPOINT"
DEFAULT_CHECKPOINT = os.path.join("benchmarks", "checkpoints", "flux_digits")


class CheckpointError(CliError):
    """The digits checkpoint is missing or not in the expected format."""


def default_checkpoint() -> str:
    """The checkpoint of a repository checkout, when the demo runs from its root (the package
    does not look for its own checkout, and the 7 MB checkpoint is not part of it)."""
    return os.path.join(os.getcwd(), DEFAULT_CHECKPOINT)


def missing_files(path: str) -> list[str]:
    return [f for f in FILES if not os.path.isfile(os.path.join(path, f))]


def resolve_checkpoint(path: str | None, disabled: bool = False) -> str | None:
    """The checkpoint folder the demo should use, or None.

    An explicit `path` (or $TS_COMPILE_CHECKPOINT) must be complete; the default folder is used
    only when it is complete (a training run may be writing it).
    """
    if disabled:
        return None
    explicit = path or os.environ.get(ENV) or None
    if explicit is None:
        folder = default_checkpoint()
        return folder if os.path.isdir(folder) and not missing_files(folder) else None
    if not os.path.isdir(explicit):
        raise CheckpointError(f"checkpoint folder {explicit!r} does not exist",
                              "pass --checkpoint with a folder holding " + ", ".join(FILES)
                              + " (or --no-checkpoint)")
    missing = missing_files(explicit)
    if missing:
        raise CheckpointError(f"checkpoint {explicit!r} lacks {', '.join(missing)}",
                              "the folder needs " + ", ".join(FILES) + " (see python -m "
                              "ts_compile demo --help; the quality benchmark's training writes "
                              "it)")
    return explicit


@dataclasses.dataclass
class DigitsCheckpoint:
    path: str
    model: torch.nn.Module
    encoder_hidden_states: torch.Tensor  # (11, T, joint_attention_dim)
    pooled_projections: torch.Tensor     # (11, pooled_projection_dim)
    sampler: dict[str, Any]

    @property
    def num_steps(self) -> int:
        return int(self.sampler["num_steps"])

    def describe(self) -> str:
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        return (f"FLUX digits checkpoint {self.path} ({cfg.num_layers} double + "
                f"{cfg.num_single_layers} single blocks, {params / 1e6:.2f}M params), "
                f"{self.sampler['image_size']}x{self.sampler['image_size']} digits, "
                f"shift {self.sampler['shift']}, CFG {self.sampler['cfg']} "
                f"x{self.sampler['guidance_scale']}")


def load_checkpoint(path: str) -> DigitsCheckpoint:
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import load_file

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r}: {what}",
                               "re-save it in the demo's format (python -m ts_compile demo "
                               "--help), or pass --no-checkpoint")

    try:
        with open(os.path.join(path, "sampler.json"), encoding="utf-8") as f:
            sampler = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise fail(f"sampler.json unreadable: {err}") from None
    if not isinstance(sampler, dict):
        raise fail("sampler.json is not a JSON object")
    absent = [k for k in SAMPLER_KEYS if k not in sampler]
    if absent:
        raise fail(f"sampler.json lacks {', '.join(absent)}")
    if sampler["cfg"] not in ("batched", "none"):
        raise fail(f"sampler.json cfg={sampler['cfg']!r}; expected 'batched' or 'none'")
    size, patch = int(sampler["image_size"]), int(sampler["patch"])
    if patch != 2 or size % 2:
        raise fail(f"image_size {size} / patch {patch}: FLUX packs 2x2 patches")
    try:
        model = FluxTransformer2DModel.from_pretrained(path, torch_dtype=torch.float32,
                                                       low_cpu_mem_usage=False).eval()
        cond = load_file(os.path.join(path, "conditioning.safetensors"))
    except Exception as err:  # noqa: BLE001 - any load failure is a broken checkpoint
        raise fail(f"cannot load: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                   ) from err
    ehs, pooled = cond.get("encoder_hidden_states"), cond.get("pooled_projections")
    cfg = model.config
    if ehs is None or pooled is None:
        raise fail("conditioning.safetensors needs encoder_hidden_states and pooled_projections")
    if ehs.ndim != 3 or ehs.shape[0] != NUM_CLASSES + 1 or ehs.shape[2] != cfg.joint_attention_dim:
        raise fail(f"encoder_hidden_states has shape {tuple(ehs.shape)}; expected "
                   f"(11, T, {cfg.joint_attention_dim})")
    if tuple(pooled.shape) != (NUM_CLASSES + 1, cfg.pooled_projection_dim):
        raise fail(f"pooled_projections has shape {tuple(pooled.shape)}; expected "
                   f"(11, {cfg.pooled_projection_dim})")
    if cfg.in_channels != int(sampler["in_channels"]):
        raise fail(f"config in_channels {cfg.in_channels} != sampler.json in_channels "
                   f"{sampler['in_channels']}")
    return DigitsCheckpoint(path, model, ehs.float(), pooled.float(), sampler)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C*4), as FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack`, as FluxPipeline._unpack_latents at the latent size."""
    b, _, ch = tokens.shape
    x = tokens.view(b, h // 2, w // 2, ch // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, ch // 4, h, w)


def sigmas(shift: float, num_steps: int) -> list[float]:
    """FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(num_steps).sigmas (last 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=float(shift))
    scheduler.set_timesteps(num_steps)
    return [float(s) for s in scheduler.sigmas]


def initial_noise(ckpt: DigitsCheckpoint, per_class: int, seed: int = 0) -> torch.Tensor:
    size = int(ckpt.sampler["image_size"])
    channels = int(ckpt.sampler["in_channels"]) // 4
    g = torch.Generator().manual_seed(seed)
    return torch.randn(NUM_CLASSES * per_class, channels, size, size, generator=g)


def sample_digits(model: Callable, ckpt: DigitsCheckpoint, noise: torch.Tensor, num_steps: int,
                  on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Digits (B, C, H, W) in [0, 1]; sample i is class i // (B / 10) (rows of a grid)."""
    b, _, h, w = noise.shape
    per_class = b // NUM_CLASSES
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    batched = ckpt.sampler["cfg"] == "batched"
    rows = torch.cat([labels, torch.full_like(labels, UNCOND)]) if batched else labels
    ehs, pooled = ckpt.encoder_hidden_states[rows], ckpt.pooled_projections[rows]
    img_ids = flux_image_ids(h // 2, w // 2)
    txt_ids = torch.zeros(ehs.shape[1], 3)
    scale = float(ckpt.sampler["guidance_scale"])
    extra = {}
    if ckpt.model.config.guidance_embeds:  # guidance-distilled: the scale is an input
        extra["guidance"] = torch.full((rows.shape[0],), scale)
    conditioning = dict(encoder_hidden_states=ehs, pooled_projections=pooled, img_ids=img_ids,
                        txt_ids=txt_ids, **extra)
    x = euler_guided(model, pack(noise), conditioning, sigmas(ckpt.sampler["shift"], num_steps),
                     scale, batched, on_step)
    low, high = (float(p) for p in ckpt.sampler["pixel_range"])
    return ((unpack(x, h, w) - low) / (high - low)).clamp(0, 1)


def euler_guided(model: Callable, x: torch.Tensor, conditioning: dict[str, torch.Tensor],
                 s: list[float], scale: float, batched: bool = True,
                 on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Flow-matching Euler steps over the sigmas `s` (the last 0) on packed tokens `x`, with
    classifier-free guidance: `batched`, the model sees `[x, x]` against the conditioning's
    (cond, uncond) rows and the velocity is uncond + scale * (cond - uncond); otherwise `x` alone
    (a guidance-distilled model). The demo's and the quality benchmark's sampler."""
    rows = conditioning["encoder_hidden_states"].shape[0]
    for k in range(len(s) - 1):
        inp = torch.cat([x, x]) if batched else x
        v = model(hidden_states=inp, timestep=torch.full((rows,), s[k]), return_dict=False,
                  **conditioning)[0]
        if batched:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + scale * (v_cond - v_uncond)
        x = x + (s[k + 1] - s[k]) * v
        if on_step is not None:
            on_step(k + 1)
    return x
