"""Offline diffusers pipelines (tiny, random weights, no hub) and a test-only eager reference.

Builders return ``(pipe, make_kwargs)``: ``make_kwargs(**overrides)`` gives the call kwargs of one
generation (prompt embeddings instead of text encoders, a fresh seeded generator, tiny sizes),
so two calls with the same overrides start from the same noise. Every builder seeds torch before
creating each model, so two builds are identical.

``ReferenceTransformer`` stands in for ``pipe.transformer``: it speaks diffusers' cache protocol
(``cache_context`` / ``_reset_stateful_cache``) the way the compiled model should, with one
``EagerTaylorSeer`` (tests/reference.py, no ts_compile code) per call name.
``PlainReferenceTransformer`` is the same without that protocol, for transformers that lack it
(DiT); ``reference_for`` picks the one matching the inner model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ts_compile.cli.toy_models import FLUX_CONFIGS

from .reference import EagerTaylorSeer, official_schedule

DEFAULT_CONTEXT = "default"


# --------------------------------------------------------------------------------------------- #
# reference wrapper
# --------------------------------------------------------------------------------------------- #
def block_paths(model: nn.Module) -> list[str]:
    """Children of every top-level ``nn.ModuleList`` whose children all share one class."""
    paths = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList) and len(child) > 0:
            if len({type(m) for m in child}) == 1:
                paths += [f"{name}.{i}" for i in range(len(child))]
    return paths


class PlainReferenceTransformer(nn.Module):
    """Eager TaylorSeer around a transformer that does not speak diffusers' cache protocol
    (DiT): every call goes to the "default" reference and nothing resets it but ``reset()``.

    Unknown attributes (``config``, ``dtype``, ``device``, ...) are read from the inner model, so
    ``pipe.transformer = wrapper`` lets the pipeline run unchanged; a pipeline's
    ``hasattr(transformer, "_reset_stateful_cache")`` sees exactly what the inner model has.
    """

    def __init__(self, model: nn.Module, order: int, warmup: int, interval: int,
                 paths: list[str] | None = None, **reference_options) -> None:
        """`reference_options`: more `EagerTaylorSeer` arguments (`adaptive`, `estimate_paths`,
        ...) for every call name's reference."""
        super().__init__()
        self.model = model
        self.order, self.warmup, self.interval = order, warmup, interval
        self.paths = list(paths) if paths is not None else block_paths(model)
        self.reference_options = reference_options
        self.references: dict[str, EagerTaylorSeer] = {}
        self.current = DEFAULT_CONTEXT
        self.calls: list[str] = []  # the context name of every call, in order
        self.finished: list[dict[str, list[int]]] = []  # per reset: each name's computed steps
        self.estimates: list[float] = []  # adaptive: every estimate of every finished name

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules of the wrapper
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def config(self):
        return self.model.config

    def reference(self, name: str) -> EagerTaylorSeer:
        """The reference of one call name, created on first use (step 0, empty tables)."""
        if name not in self.references:
            self.references[name] = EagerTaylorSeer(
                self.model, self.paths, self.order, official_schedule(self.warmup, self.interval),
                **self.reference_options)
        return self.references[name]

    def reset(self) -> None:
        """Forget every call name's state (a new generation); `finished` keeps what each name
        computed."""
        if self.references:
            self.finished.append({name: list(ref.computed_steps)
                                  for name, ref in self.references.items()})
            self.estimates += [e for ref in self.references.values() for _, e in ref.estimates]
        self.references.clear()

    def forward(self, *args, **kwargs):
        self.calls.append(self.current)
        return self.reference(self.current)(*args, **kwargs)


class ReferenceTransformer(PlainReferenceTransformer):
    """Eager TaylorSeer with diffusers' cache protocol, one reference per cache-context name.

    The step index of each name is counted by its ``EagerTaylorSeer`` (calls since its last reset),
    which is what the runtime does when the pipeline gives no ``step_index``. Outside any context
    the calls go to the "default" reference. ``_reset_stateful_cache`` (called by the pipeline's
    ``maybe_free_model_hooks``) drops every reference, so the next generation starts from step 0;
    ``reset_calls`` counts those calls (to check that the pipeline really makes them).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reset_calls = 0

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs):
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def _reset_stateful_cache(self, recurse: bool = True) -> None:
        self.reset_calls += 1
        self.reset()


def reference_for(model: nn.Module, order: int, warmup: int, interval: int):
    """The reference wrapper speaking the same protocol as `model` (CacheMixin or not)."""
    speaks = hasattr(model, "cache_context") and hasattr(model, "_reset_stateful_cache")
    cls = ReferenceTransformer if speaks else PlainReferenceTransformer
    return cls(model, order, warmup, interval)


# --------------------------------------------------------------------------------------------- #
# builders
# --------------------------------------------------------------------------------------------- #
def _tiny_vae(seed: int, **extra):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    config = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 8],
                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32)
    config.update(extra)
    return AutoencoderKL(**config).eval()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def flux_pipeline(seed: int = 0, cfg: bool = False):
    """Tiny FluxPipeline (2 double + 2 single blocks); ``cfg=True`` turns on true CFG."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**dict(FLUX_CONFIGS["test"], num_single_layers=2)).eval()
    vae = _tiny_vae(seed + 1, use_quant_conv=False, use_post_quant_conv=False,
                    shift_factor=0.0609, scaling_factor=1.5035)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    embeds = torch.Generator().manual_seed(seed + 2)
    prompt = torch.randn(1, 8, 32, generator=embeds)
    pooled = torch.randn(1, 32, generator=embeds)
    negative = torch.randn(1, 8, 32, generator=embeds)
    negative_pooled = torch.randn(1, 32, generator=embeds)

    def make_kwargs(**overrides):
        kwargs = dict(prompt_embeds=prompt, pooled_prompt_embeds=pooled, height=16, width=16,
                      num_inference_steps=8, guidance_scale=3.5, output_type="latent",
                      generator=_generator(seed + 3))
        if cfg:
            kwargs.update(negative_prompt_embeds=negative,
                          negative_pooled_prompt_embeds=negative_pooled, true_cfg_scale=2.0)
        kwargs.update(overrides)
        return kwargs

    return pipe, make_kwargs


def dit_pipeline(seed: int = 0):
    """Tiny DiTPipeline (2 blocks, learned sigma, batched CFG: one call per step, no context)."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, norm_num_groups=2).eval()
    vae = _tiny_vae(seed + 1)
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(),
                       id2label={0: "a", 1: "b"})
    pipe.set_progress_bar_config(disable=True)

    def make_kwargs(**overrides):
        kwargs = dict(class_labels=[0], guidance_scale=4.0, num_inference_steps=8,
                      output_type="pt", generator=_generator(seed + 3))
        kwargs.update(overrides)
        return kwargs

    return pipe, make_kwargs


def hunyuan_video_pipeline(seed: int = 0, cfg: bool = False):
    """Tiny HunyuanVideoPipeline (2 double + 2 single blocks, 1 refiner block, 5 frames, 16x16).

    The text encoders and tokenizers are None: the embeddings (and the attention mask the
    pipeline requires with them) are passed directly, so ``encode_prompt`` never touches them.
    ``cfg=True`` passes negative embeddings and ``true_cfg_scale=2.0`` (a second, "uncond" call).
    """
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideoPipeline, HunyuanVideoTransformer3DModel)

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=2, num_single_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4)).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, norm_num_groups=4, scaling_factor=0.476986,
        spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True).eval()
    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=transformer,
                                vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    embeds = torch.Generator().manual_seed(seed + 2)
    prompt = torch.randn(1, 6, 16, generator=embeds)
    pooled = torch.randn(1, 8, generator=embeds)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    negative = torch.randn(1, 6, 16, generator=embeds)
    negative_pooled = torch.randn(1, 8, generator=embeds)
    negative_mask = torch.tensor([[1, 1, 1, 0, 0, 0]])

    def make_kwargs(**overrides):
        kwargs = dict(prompt_embeds=prompt, pooled_prompt_embeds=pooled,
                      prompt_attention_mask=mask, height=16, width=16, num_frames=5,
                      num_inference_steps=8, guidance_scale=6.0, output_type="latent",
                      generator=_generator(seed + 3))
        if cfg:
            kwargs.update(negative_prompt_embeds=negative,
                          negative_pooled_prompt_embeds=negative_pooled,
                          negative_prompt_attention_mask=negative_mask, true_cfg_scale=2.0)
        kwargs.update(overrides)
        return kwargs

    return pipe, make_kwargs
