"""Configs and example inputs for tracing diffusers transformers (no weights, no download).

One job: given a diffusers transformer class and a config, say what one denoiser call looks like,
so `ts_compile.explain` can trace it. Used by `python -m ts_compile explain` and by
`benchmarks/state_memory.py`.

    spec = MODEL_SPECS["FluxTransformer2DModel"]
    model = build_model(spec.cls_name, PRESETS["flux-dev"].config, device="meta")
    kwargs = example_inputs(spec.cls_name, model.config, Resolution(1024, 1024, text_tokens=512),
                            device="meta")

Sizes are in pixels (and frames) of the decoded image, as a pipeline is called: the latent is
1/8 of it (the VAE factor of every supported model), and FLUX packs 2x2 latent pixels into one
token. Every call uses ``return_dict=False`` and batch 1 unless asked otherwise (batched CFG
doubles the batch).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import torch

VAE_FACTOR = 8


class ConfigError(ValueError):
    """A model class, config or size that cannot be built or traced; `hint` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclasses.dataclass(frozen=True)
class Resolution:
    height: int
    width: int
    frames: int | None = None      # video models only
    text_tokens: int = 8
    batch: int = 1


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    cls_name: str
    video: bool
    tiny: Mapping[str, Any]         # a small config of the real class (tests/diffusers_models.py)
    tiny_size: Resolution           # the matching size: 64 image tokens or fewer


@dataclasses.dataclass(frozen=True)
class Preset:
    title: str
    cls_name: str
    config: Mapping[str, Any]
    size: Resolution
    setting: str                    # the size in words, e.g. "1024x1024: 4096 image + 512 text"


# Small configs (tests/diffusers_models.py builds its models from these), with sizes that give
# the same latents.
MODEL_SPECS: dict[str, ModelSpec] = {s.cls_name: s for s in [
    ModelSpec("FluxTransformer2DModel", False, dict(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6), guidance_embeds=False), Resolution(128, 128)),
    ModelSpec("DiTTransformer2DModel", False, dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=3,
        sample_size=8, patch_size=2, norm_type="ada_norm_zero", num_embeds_ada_norm=10),
        Resolution(64, 64)),
    ModelSpec("HunyuanVideoTransformer3DModel", True, dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_single_layers=2, num_refiner_layers=2, patch_size=2, patch_size_t=1,
        text_embed_dim=32, pooled_projection_dim=32, rope_axes_dim=(4, 6, 6),
        guidance_embeds=False), Resolution(64, 64, frames=9)),
    ModelSpec("SD3Transformer2DModel", False, dict(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        caption_projection_dim=32, pooled_projection_dim=32, pos_embed_max_size=16),
        Resolution(64, 64)),
    ModelSpec("PixArtTransformer2DModel", False, dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=3,
        cross_attention_dim=32, sample_size=8, patch_size=2, caption_channels=24,
        norm_type="ada_norm_single"), Resolution(64, 64)),
    ModelSpec("WanTransformer3DModel", True, dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=3, rope_max_seq_len=32),
        Resolution(64, 64, frames=9)),
]}

# The published configurations (transformer/config.json of each model), at a typical size.
PRESETS: dict[str, Preset] = {
    "flux-dev": Preset("FLUX.1-dev", "FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
        guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        Resolution(1024, 1024, text_tokens=512), "1024x1024: 4096 image + 512 text tokens"),
    "dit-xl-2": Preset("DiT-XL/2", "DiTTransformer2DModel", dict(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
        num_layers=28, sample_size=32, patch_size=2, norm_type="ada_norm_zero",
        num_embeds_ada_norm=1000), Resolution(256, 256), "256x256: 256 tokens"),
    "hunyuan-video": Preset("HunyuanVideo", "HunyuanVideoTransformer3DModel", dict(
        in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128,
        num_layers=20, num_single_layers=40, num_refiner_layers=2, patch_size=2, patch_size_t=1,
        text_embed_dim=4096, pooled_projection_dim=768, rope_axes_dim=(16, 56, 56),
        guidance_embeds=True), Resolution(720, 1280, frames=129, text_tokens=256),
        "720x1280, 129 frames: 118800 video + 256 text tokens"),
    "sd3-medium": Preset("SD3-medium", "SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
        caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192),
        Resolution(1024, 1024, text_tokens=333), "1024x1024: 4096 image + 333 text tokens"),
    "pixart-alpha": Preset("PixArt-alpha XL/2", "PixArtTransformer2DModel", dict(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
        num_layers=28, cross_attention_dim=1152, sample_size=128, patch_size=2,
        caption_channels=4096, norm_type="ada_norm_single", use_additional_conditions=True),
        Resolution(1024, 1024, text_tokens=120), "1024x1024: 4096 image + 120 text tokens"),
    "wan2.1-1.3b": Preset("Wan2.1-T2V-1.3B", "WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024),
        Resolution(480, 832, frames=81, text_tokens=512),
        "480x832, 81 frames: 32760 video + 512 text tokens"),
}


def model_class(cls_name: str) -> type:
    """The diffusers class called `cls_name`, if this module knows how to feed it."""
    if cls_name not in MODEL_SPECS:
        import diffusers

        close = [n for n in MODEL_SPECS if n.lower().startswith(cls_name.lower()[:4])]
        if isinstance(getattr(diffusers, cls_name, None), type):
            raise ConfigError(f"{cls_name} is a diffusers class, but not one explain can build "
                              "inputs for",
                              f"supported: {', '.join(MODEL_SPECS)}; for another model call "
                              "ts_compile.explain(model, **inputs) from Python")
        raise ConfigError(f"unknown model class {cls_name!r}",
                          f"use one of {', '.join(close or MODEL_SPECS)}")
    import diffusers

    return getattr(diffusers, cls_name)


def check_config(cls_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` without diffusers' bookkeeping keys ("_class_name", ...); unknown keys raise."""
    cls = model_class(cls_name)
    named = config.get("_class_name")
    if named is not None and named != cls_name:
        raise ConfigError(f"the config is for {named}, not {cls_name}",
                          f"run `python -m ts_compile explain {named} --config ...`")
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p != "self"]
    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    unknown = [k for k in clean if k not in params]
    if unknown:
        raise ConfigError(f"unknown config key(s) for {cls_name}: {', '.join(unknown)}",
                          f"allowed keys: {', '.join(allowed)}")
    return clean


def build_model(cls_name: str, config: Mapping[str, Any], device: str = "meta",
                seed: int = 0) -> torch.nn.Module:
    """The model in eval mode: on `meta` (no memory, no weights) or with random weights."""
    cls = model_class(cls_name)
    config = check_config(cls_name, config)
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            model = cls(**config)
    except Exception as err:  # noqa: BLE001 - a config the class rejects: say which and why
        raise ConfigError(f"{cls_name}(**config) failed: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}",
                          "check the config's values against the model's config.json") from err
    return model.eval()


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _patch_hw(cls_name: str, config: Any) -> int:
    if cls_name == "FluxTransformer2DModel":
        return 2 * int(_cfg(config, "patch_size", 1))  # the pipeline packs 2x2 latent pixels
    patch = _cfg(config, "patch_size", 2)
    return int(patch[-1] if isinstance(patch, (tuple, list)) else patch)


def _latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1  # the video VAEs' temporal factor 4 (first frame alone)


def tokens(cls_name: str, config: Any, size: Resolution) -> int:
    """Image (or video) tokens of one sample at `size`."""
    step = VAE_FACTOR * _patch_hw(cls_name, config)
    n = (size.height // step) * (size.width // step)
    if MODEL_SPECS[cls_name].video:
        patch_t = _cfg(config, "patch_size_t", None)
        if patch_t is None:
            patch = _cfg(config, "patch_size", 1)
            patch_t = patch[0] if isinstance(patch, (tuple, list)) else 1
        n *= _latent_frames(size.frames or 1) // int(patch_t)
    return n


def check_size(cls_name: str, config: Any, size: Resolution) -> None:
    step = VAE_FACTOR * _patch_hw(cls_name, config)
    for name, value in (("height", size.height), ("width", size.width)):
        if value < step or value % step:
            raise ConfigError(f"--{name} {value} is not a positive multiple of {step} for "
                              f"{cls_name} (VAE factor {VAE_FACTOR} x patch "
                              f"{step // VAE_FACTOR})", f"use e.g. --{name} {max(step, value // step * step)}")
    if MODEL_SPECS[cls_name].video:
        if size.frames is None or size.frames < 1 or (size.frames - 1) % 4:
            raise ConfigError(f"--frames {size.frames} is not 4k+1 for {cls_name}",
                              "use e.g. --frames 9, 33, 81 or 129")
    elif size.frames is not None:
        raise ConfigError(f"--frames is for video models; {cls_name} makes images",
                          "leave --frames out")
    for name, value in (("text-tokens", size.text_tokens), ("batch", size.batch)):
        if value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}", f"use e.g. --{name} 1")
    if cls_name == "SD3Transformer2DModel":
        limit = _cfg(config, "pos_embed_max_size", None)
        side = max(size.height, size.width) // step
        if limit is not None and side > int(limit):
            raise ConfigError(f"{side} patches a side exceed pos_embed_max_size={limit}",
                              f"use at most --height/--width {int(limit) * step}")


def flux_image_ids(h: int, w: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """FLUX's (h*w, 3) latent image ids: 0, row, column (FluxPipeline._prepare_latent_image_ids)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device)


def example_inputs(cls_name: str, config: Any, size: Resolution, device: str = "meta",
                   seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of one forward call of `cls_name` built from `config` at `size`.

    On `meta` the tensors have shapes only; on a real device they are random (fixed `seed`).
    `config` is the model's config (`model.config`) or the dict it was built from.
    """
    model_class(cls_name)
    check_size(cls_name, config, size)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        if str(device) == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g).to(device)

    def full(value: float, *shape: int) -> torch.Tensor:
        return torch.full(shape, value, device=device)

    b, t = size.batch, size.text_tokens
    h, w = size.height // VAE_FACTOR, size.width // VAE_FACTOR
    f = _latent_frames(size.frames) if size.frames else None
    c = int(_cfg(config, "in_channels"))
    if cls_name == "FluxTransformer2DModel":
        p = _patch_hw(cls_name, config)
        kwargs = dict(hidden_states=rand(b, (h // p) * (w // p), c),
                      encoder_hidden_states=rand(b, t, int(_cfg(config, "joint_attention_dim"))),
                      pooled_projections=rand(b, int(_cfg(config, "pooled_projection_dim"))),
                      timestep=full(0.5, b), img_ids=flux_image_ids(h // p, w // p, device),
                      txt_ids=torch.zeros(t, 3, device=device))
        if _cfg(config, "guidance_embeds", False):
            kwargs["guidance"] = full(3.5, b)
    elif cls_name == "DiTTransformer2DModel":
        kwargs = dict(hidden_states=rand(b, c, h, w), timestep=full(500.0, b),
                      class_labels=torch.zeros(b, dtype=torch.long, device=device))
    elif cls_name == "HunyuanVideoTransformer3DModel":
        kwargs = dict(hidden_states=rand(b, c, f, h, w), timestep=full(500.0, b),
                      encoder_hidden_states=rand(b, t, int(_cfg(config, "text_embed_dim"))),
                      encoder_attention_mask=torch.ones(b, t, device=device),
                      pooled_projections=rand(b, int(_cfg(config, "pooled_projection_dim"))))
        if _cfg(config, "guidance_embeds", False):
            kwargs["guidance"] = full(6.0, b)
    elif cls_name == "SD3Transformer2DModel":
        kwargs = dict(hidden_states=rand(b, c, h, w),
                      encoder_hidden_states=rand(b, t, int(_cfg(config, "joint_attention_dim"))),
                      pooled_projections=rand(b, int(_cfg(config, "pooled_projection_dim"))),
                      timestep=full(500.0, b))
    elif cls_name == "PixArtTransformer2DModel":
        extra = {"resolution": None, "aspect_ratio": None}
        additional = _cfg(config, "use_additional_conditions", None)
        if additional is None:  # the class's own rule
            additional = _cfg(config, "sample_size", None) == 128
        if additional:
            extra = {"resolution": full(float(size.height), b, 2),
                     "aspect_ratio": full(size.height / size.width, b, 1)}
        kwargs = dict(hidden_states=rand(b, c, h, w),
                      encoder_hidden_states=rand(b, t, int(_cfg(config, "caption_channels"))),
                      timestep=full(500.0, b), added_cond_kwargs=extra)
    elif cls_name == "WanTransformer3DModel":
        kwargs = dict(hidden_states=rand(b, c, f, h, w), timestep=full(500.0, b),
                      encoder_hidden_states=rand(b, t, int(_cfg(config, "text_dim"))))
        image_dim = _cfg(config, "image_dim", None)
        if image_dim:  # image-to-video: CLIP image tokens
            kwargs["encoder_hidden_states_image"] = rand(b, 257, int(image_dim))
    else:  # pragma: no cover - MODEL_SPECS and this function list the same classes
        raise AssertionError(cls_name)
    kwargs["return_dict"] = False
    return kwargs
