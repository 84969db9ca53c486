"""Every transformer model class that diffusers exports, as a tiny model and one denoiser call.

``ZOO`` maps a class name to a ``ZooEntry``: a small config of the real class (random weights,
CPU, float32), a function building the keyword arguments of one forward call, and which argument
is the latent (what a sampler updates each step) and which the time. ``build(entry)`` makes the
model, ``entry.inputs(model, generator)`` the call (without ``return_dict``).

Configs come from diffusers' own model tests (tests/models/transformers/, diffusers 0.40.dev
snapshot) unless an entry says otherwise; classes newer than that snapshot get a config written
from the installed 0.42.1 class's ``__init__`` and ``forward``. Most test configs have one block
per list, which hides the block stack from a pass that looks for repeated blocks: these configs
use two or more where the class allows it, and ``test_blocks`` records the test config's counts.
Sequences stay at 64 tokens or fewer. The six classes of
``ts_compile.integrations.diffusers_inputs.MODEL_SPECS`` use those configs and example inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ts_compile.integrations.diffusers_inputs import MODEL_SPECS, example_inputs, flux_image_ids

Inputs = Callable[[torch.nn.Module, torch.Generator], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    cls_name: str
    config: Mapping[str, Any]
    inputs: Inputs                  # (model, generator) -> kwargs of one call, no return_dict
    source: str                     # where the config and inputs came from
    test_blocks: Mapping[str, int]  # block counts of diffusers' test config (empty: none there)
    latent: str = "hidden_states"   # the argument a sampler updates each step
    time: str | None = "timestep"   # the time argument (None: the class takes no time)
    extra_latents: Mapping[str, int] = dataclasses.field(default_factory=dict)  # arg -> output
    extra_times: tuple[str, ...] = ()  # further time arguments, falling like `time`
    # the latent's part of output[0] when it is not the leading sub-box of the same rank
    to_latent: Callable[[torch.Tensor], torch.Tensor] | None = None
    kind: str = "image"             # image / video / audio / ...; "part" = not a denoiser
    note: str = ""

    @property
    def denoiser(self) -> bool:
        return self.kind != "part"


def _r(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _t(value: float, batch: int = 1) -> torch.Tensor:
    return torch.full((batch,), float(value))


def _spec_inputs(cls_name: str) -> Inputs:
    """The package's example inputs for a MODEL_SPECS class (random, at its tiny size)."""
    spec = MODEL_SPECS[cls_name]

    def inputs(model: torch.nn.Module, g: torch.Generator) -> dict[str, Any]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        kwargs = example_inputs(cls_name, model.config, spec.tiny_size, device="cpu", seed=seed)
        kwargs.pop("return_dict")
        return kwargs

    return inputs


def _cartesian_ids(*sizes: int) -> torch.Tensor:
    """FLUX.2-style position ids: the cartesian product of aranges, one row per token."""
    return torch.cartesian_prod(*[torch.arange(s) for s in sizes])


# ----------------------------------------------------------------------------------------------
# Input builders, one per class that needs more than a latent, a time and a text.
# ----------------------------------------------------------------------------------------------

def _ace_step(model, g):
    # test: batch 2, seq 8; audio acoustic latents (B, T, 8), context latents (B, T, 16)
    return dict(hidden_states=_r(g, 1, 8, 8), timestep=_t(1.0), timestep_r=_t(0.5),
                encoder_hidden_states=_r(g, 1, 10, 32), context_latents=_r(g, 1, 8, 16))


def _allegro(model, g):
    return dict(hidden_states=_r(g, 1, 4, 2, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999))


def _anyflow(model, g):
    # (B, F, C, H, W); 8x8 instead of the test's 16x16 keeps 32 tokens
    return dict(hidden_states=_r(g, 1, 2, 4, 8, 8), timestep=torch.full((1, 2), 999.0),
                r_timestep=torch.full((1, 2), 250.0), encoder_hidden_states=_r(g, 1, 12, 16))


def _anyflow_far(model, g):
    return dict(hidden_states=_r(g, 1, 4, 4, 8, 8), timestep=torch.full((1, 4), 999.0),
                r_timestep=torch.full((1, 4), 250.0), encoder_hidden_states=_r(g, 1, 12, 16),
                chunk_partition=[2, 2])


def _aura_flow(model, g):
    return dict(hidden_states=_r(g, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 8, 32),
                timestep=_t(999))


def _flux_like(channels: int, text_dim: int, pooled: int | None = None, guidance=None,
               ids_dims: int = 3):
    """FLUX-layout inputs: 16 packed image tokens (4x4), 8 text tokens, position ids."""

    def inputs(model, g):
        kwargs = dict(hidden_states=_r(g, 1, 16, channels),
                      encoder_hidden_states=_r(g, 1, 8, text_dim), timestep=_t(1.0))
        if ids_dims == 3:
            kwargs.update(img_ids=flux_image_ids(4, 4), txt_ids=torch.zeros(8, 3))
        else:  # (t, h, w, l) ids of FLUX.2 / FLUX.3
            kwargs.update(img_ids=_cartesian_ids(1, 4, 4, 1), txt_ids=_cartesian_ids(1, 1, 1, 8))
        if pooled is not None:
            kwargs["pooled_projections"] = _r(g, 1, pooled)
        if guidance is not None:
            kwargs["guidance"] = _t(guidance)
        return kwargs

    return inputs


def _flux2(model, g):
    kwargs = _flux_like(4, 32, guidance=1.0, ids_dims=4)(model, g)
    kwargs["img_ids"], kwargs["txt_ids"] = kwargs["img_ids"][None], kwargs["txt_ids"][None]
    return kwargs


def _bria_fibo(model, g):
    kwargs = _flux_like(48, 64)(model, g)
    ctx = kwargs["encoder_hidden_states"]
    # one text-encoder layer per block (the model projects layer i for block i)
    blocks = model.config.num_layers + model.config.num_single_layers
    kwargs["text_encoder_layers"] = [ctx[:, :, :32] for _ in range(blocks)]
    return kwargs


def _bria_fibo2(model, g):
    cfg = model.config
    bundles = 1 + len(cfg.injection_layer_ids)  # the Perceiver's bundle, then one per injection
    return dict(hidden_states=_r(g, 1, cfg.in_channels, 8, 8), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, bundles, 8, cfg.cap_feat_dim))


def _chronoedit(model, g):
    return dict(hidden_states=_r(g, 1, 16, 2, 8, 8), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 12, 32), encoder_hidden_states_image=None)


def _cogvideox(model, g):
    # (B, F, C, H, W)
    return dict(hidden_states=_r(g, 1, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999))


def _cogview(model, g):
    size = torch.tensor([[64.0, 64.0]])
    return dict(hidden_states=_r(g, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999), original_size=size, target_size=size,
                crop_coords=torch.zeros(1, 2))


def _consisid(model, g):
    return dict(hidden_states=_r(g, 1, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999), id_vit_hidden=[torch.ones(1, 2, 2)], id_cond=torch.ones(1, 2))


def _cosmos3(model, g):
    # the test's packed layout at a 4x4 latent instead of 1x1: 4 text tokens (the causal prefix)
    # then the 16 vision tokens of one frame, with 3-axis rope positions (time, row, column)
    text, h, w = 4, 4, 4
    seq = text + h * w
    position_ids = torch.zeros(3, seq, dtype=torch.long)
    position_ids[:, :text] = torch.arange(text)
    position_ids[0, text:] = text
    position_ids[1, text:] = text + torch.arange(h).repeat_interleave(w)
    position_ids[2, text:] = text + torch.arange(w).repeat(h)
    vision = torch.arange(text, seq)
    return dict(input_ids=torch.randint(0, model.config.vocab_size, (text,), generator=g),
                text_indexes=torch.arange(text), position_ids=position_ids, und_len=text,
                sequence_length=seq, vision_tokens=[_r(g, 1, model.config.latent_channel, 1, h, w)],
                vision_token_shapes=[(1, h, w)], vision_sequence_indexes=vision,
                vision_mse_loss_indexes=vision, vision_timesteps=torch.full((h * w,), 999.0),
                vision_noisy_frame_indexes=[torch.tensor([0])])


def _cosmos(model, g):
    return dict(hidden_states=_r(g, 1, 4, 1, 16, 16), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 12, 16), attention_mask=torch.ones(1, 12), fps=30)


def _unet_layer(channels: int, context: int | None):
    """A transformer layer of a UNet: (B, C, H, W) features in, the same shape out."""

    def inputs(model, g):
        kwargs = dict(hidden_states=_r(g, 1, channels, 8, 8))
        if context is not None:
            kwargs["encoder_hidden_states"] = _r(g, 1, 8, context)
        return kwargs

    return inputs


def _dit_legacy(model, g):
    return dict(hidden_states=_r(g, 1, 4, 8, 8), timestep=_t(999), class_labels=torch.tensor([1]))


def _easyanimate(model, g):
    return dict(hidden_states=_r(g, 1, 4, 2, 8, 8), timestep=_t(999), timestep_cond=None,
                encoder_hidden_states=_r(g, 1, 16, 16), encoder_hidden_states_t5=None,
                inpaint_latents=None, control_latents=None)


def _ernie_image(model, g):
    return dict(hidden_states=_r(g, 1, 16, 8, 8), timestep=_t(1.0), text_bth=_r(g, 1, 16, 16),
                text_lens=torch.tensor([16]))


def _flux3(model, g):
    cfg = model.config
    return dict(hidden_states=_r(g, 1, 16, cfg.in_channels),
                encoder_hidden_states=_r(g, 1, 8, cfg.joint_attention_dim), timestep=_t(1.0),
                img_ids=_cartesian_ids(1, 4, 4, 1), txt_ids=_cartesian_ids(1, 1, 1, 8))


def _glm_image(model, g):
    return dict(hidden_states=_r(g, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 12, 32),
                prior_token_id=torch.randint(0, 64, (1,), generator=g),
                prior_token_drop=torch.zeros(1, dtype=torch.bool), timestep=_t(999),
                target_size=torch.tensor([[8.0, 8.0]]), crop_coords=torch.zeros(1, 2))


def _helios(model, g):
    c, f, h, w = 4, 2, 8, 8
    return dict(hidden_states=_r(g, 1, c, f, h, w), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 12, 16),
                indices_hidden_states=torch.ones(1, f),
                indices_latents_history_short=torch.ones(1, f - 1),
                indices_latents_history_mid=torch.ones(1, f - 1),
                indices_latents_history_long=torch.ones(1, (f - 1) * 4),
                latents_history_short=_r(g, 1, c, f - 1, h, w),
                latents_history_mid=_r(g, 1, c, f - 1, h, w),
                latents_history_long=_r(g, 1, c, (f - 1) * 4, h, w))


def _hidream(model, g):
    # llama3 states: (number of llama layers used, batch, seq, dim)
    layers = len(model.config.llama_layers)
    return dict(hidden_states=_r(g, 1, 4, 16, 16), timesteps=_t(999),
                encoder_hidden_states_t5=_r(g, 1, 8, 8),
                encoder_hidden_states_llama3=_r(g, layers, 1, 8, 4), pooled_embeds=_r(g, 1, 8))


def _hunyuan_dit(model, g):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed
    from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

    # the test's inputs at batch 1; the rope as the pipeline builds it (the test passes ones)
    grid = 8 // model.config.patch_size
    crops = get_resize_crop_region_for_grid((grid, grid), 512 // 8 // model.config.patch_size)
    rope = get_2d_rotary_pos_embed(model.inner_dim // model.num_heads, crops, (grid, grid),
                                   output_type="pt")
    return dict(hidden_states=_r(g, 1, 4, 8, 8), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 4, 8), text_embedding_mask=torch.ones(1, 4),
                encoder_hidden_states_t5=_r(g, 1, 4, 8), text_embedding_mask_t5=torch.ones(1, 4),
                image_meta_size=torch.tensor([[1024.0, 1024.0, 16.0, 16.0, 0.0, 0.0]]),
                style=torch.zeros(1, dtype=torch.long), image_rotary_emb=rope)


def _hunyuan_image(model, g):
    return dict(hidden_states=_r(g, 1, 4, 8, 8), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 8, 16), encoder_attention_mask=torch.ones(1, 8))


def _hunyuan_video15(model, g):
    return dict(hidden_states=_r(g, 1, 4, 1, 8, 8), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, 6, 16), encoder_hidden_states_2=_r(g, 1, 4, 8),
                encoder_attention_mask=torch.ones(1, 6), encoder_attention_mask_2=torch.ones(1, 4),
                image_embeds=torch.zeros(1, 3, 12))


def _framepack(model, g):
    c, f, h, w = 4, 3, 4, 4
    return dict(hidden_states=_r(g, 1, c, f, h, w), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 12, 16), pooled_projections=_r(g, 1, 8),
                encoder_attention_mask=torch.ones(1, 12), guidance=_t(500),
                image_embeds=_r(g, 1, 12, 16), indices_latents=torch.ones(f),
                latents_clean=_r(g, 1, c, f - 1, h, w), indices_latents_clean=torch.ones(f - 1),
                latents_history_2x=_r(g, 1, c, f - 1, h, w),
                indices_latents_history_2x=torch.ones(f - 1),
                latents_history_4x=_r(g, 1, c, (f - 1) * 4, h, w),
                indices_latents_history_4x=torch.ones((f - 1) * 4))


def _ideogram4(model, g):
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET, LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR)

    # the test's layout: 4 text tokens then a 2x2 image, one joint sequence
    text, image, channels, llm = 4, 4, 16, 24
    seq = text + image
    hidden = torch.zeros(1, seq, channels)
    hidden[:, text:] = _r(g, 1, image, channels)
    context = torch.zeros(1, seq, llm)
    context[:, :text] = _r(g, 1, text, llm)
    position_ids = torch.zeros(1, seq, 3, dtype=torch.long)
    position_ids[:, :text] = torch.arange(text)[:, None]
    position_ids[:, text:, 0] = IMAGE_POSITION_OFFSET
    position_ids[:, text:, 1] = torch.tensor([0, 0, 1, 1]) + IMAGE_POSITION_OFFSET
    position_ids[:, text:, 2] = torch.tensor([0, 1, 0, 1]) + IMAGE_POSITION_OFFSET
    indicator = torch.full((1, seq), OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    indicator[:, :text] = LLM_TOKEN_INDICATOR
    return dict(hidden_states=hidden, encoder_hidden_states=context, timestep=_t(0.5),
                position_ids=position_ids, segment_ids=torch.ones(1, seq, dtype=torch.long),
                indicator=indicator)


def _joyimage(model, g):
    return dict(hidden_states=_r(g, 1, 16, 1, 4, 4), encoder_hidden_states=_r(g, 1, 12, 16),
                timestep=_t(1.0))


def _joyimage_plus(model, g):
    return dict(hidden_states=_r(g, 1, 2, 16, 1, 2, 2), encoder_hidden_states=_r(g, 1, 12, 16),
                timestep=_t(1.0), shape_list=[[(1, 1, 1), (1, 1, 1)]])


def _kandinsky5(model, g):
    # (B, T, H, W, C) latents; rope positions per axis after the (1, 2, 2) patch
    return dict(hidden_states=_r(g, 1, 2, 8, 8, 4), encoder_hidden_states=_r(g, 1, 8, 16),
                timestep=_t(999), pooled_projections=_r(g, 1, 8),
                visual_rope_pos=[torch.arange(2), torch.arange(4), torch.arange(4)],
                text_rope_pos=torch.arange(8), scale_factor=(1.0, 1.0, 1.0))


def _kandinsky6(model, g):
    return dict(hidden_states=_r(g, 1, 2, 8, 8, 4), encoder_hidden_states=_r(g, 1, 8, 16),
                pooled_projections=_r(g, 1, 8), timestep=_t(999),
                audio_hidden_states=_r(g, 1, 8, 4))


def _kandinsky6_sr(model, g):
    # noisy latent, anchor latent and anchor mask on the channel axis; NABLA needs an 8x8 grid
    return dict(hidden_states=_r(g, 1, 1, 8, 8, 9), timestep=_t(999))


def _krea2(model, g):
    text, grid = 4, 2
    position_ids = torch.zeros(text + grid * grid, 3)
    position_ids[text:, 1] = torch.arange(grid).repeat_interleave(grid)
    position_ids[text:, 2] = torch.arange(grid).repeat(grid)
    mask = torch.ones(1, text, dtype=torch.bool)
    mask[:, -1] = False
    return dict(hidden_states=_r(g, 1, grid * grid, 16),
                encoder_hidden_states=_r(g, 1, text, 3, 16), timestep=_t(0.5),
                position_ids=position_ids, encoder_attention_mask=mask)


def _ltx(model, g):
    f, h, w = 2, 4, 4
    return dict(hidden_states=_r(g, 1, f * h * w, 4), encoder_hidden_states=_r(g, 1, 16, 16),
                timestep=_t(999), encoder_attention_mask=torch.ones(1, 16, dtype=torch.bool),
                num_frames=f, height=h, width=w)


def _ltx2(model, g):
    f, h, w, audio_frames = 2, 4, 4, 9
    return dict(hidden_states=_r(g, 1, f * h * w, 4), audio_hidden_states=_r(g, 1, audio_frames, 4),
                encoder_hidden_states=_r(g, 1, 16, 16),
                audio_encoder_hidden_states=_r(g, 1, 16, 16),
                timestep=_t(999), encoder_attention_mask=torch.ones(1, 16, dtype=torch.bool),
                num_frames=f, height=h, width=w, audio_num_frames=audio_frames, fps=25.0)


def _latte(model, g):
    return dict(hidden_states=_r(g, 1, 4, 2, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999), enable_temporal_attentions=True)


def _longcat_audio(model, g):
    # the test's inputs: 16 latent frames, 10 text tokens, both masks
    return dict(hidden_states=_r(g, 1, 16, 8), encoder_hidden_states=_r(g, 1, 10, 32),
                encoder_attention_mask=torch.ones(1, 10, dtype=torch.bool),
                attention_mask=torch.ones(1, 16, dtype=torch.bool), timestep=_t(1.0))


def _lumina_next(model, g):
    from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

    # 8x8 latent instead of the test's 16x16; a ones mask and the pipeline's complex rope table
    # (the test passes random values for both)
    rope = get_2d_rotary_pos_embed_lumina(model.head_dim, 384, 384)
    return dict(hidden_states=_r(g, 1, 4, 8, 8), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, 16, 32), encoder_mask=torch.ones(1, 16),
                image_rotary_emb=rope, cross_attention_kwargs={})


def _lumina2(model, g):
    return dict(hidden_states=_r(g, 1, 4, 16, 16), encoder_hidden_states=_r(g, 1, 16, 32),
                timestep=_t(1.0), encoder_attention_mask=torch.ones(1, 16, dtype=torch.bool))


def _minimax_h3(model, g):
    # the test's packed layout: 4 text, 6 audio and 8 video rows; the audio rows read timestep[1]
    text, audio, video = 4, 6, 8
    seq = text + audio + video
    text_idx, audio_idx = torch.arange(text), torch.arange(text, text + audio)
    video_idx = torch.arange(text + audio, seq)
    tags = torch.empty(seq, dtype=torch.long)
    tags[text_idx], tags[audio_idx], tags[video_idx] = 1, 2, 0
    timestep_indices = torch.zeros(seq, dtype=torch.long)
    timestep_indices[audio_idx] = 1
    position_ids = torch.zeros(seq, 3)
    position_ids[:, 0] = torch.arange(seq, dtype=torch.float32)
    position_ids[video_idx, 1] = torch.arange(video, dtype=torch.float32) % 4
    position_ids[video_idx, 2] = torch.arange(video, dtype=torch.float32) % 2
    return dict(hidden_states=_r(g, 1, video, 16), audio_hidden_states=_r(g, 1, audio, 6),
                encoder_hidden_states=_r(g, 1, text, 8), timestep=torch.tensor([0.7, 0.3]),
                timestep_indices=timestep_indices, token_tags=tags, position_ids=position_ids,
                video_indices=video_idx, audio_indices=audio_idx, text_indices=text_idx)


def _minimax_music3(model, g):
    return dict(hidden_states=_r(g, 1, 8, 24), encoder_hidden_states=_r(g, 1, 24, 16),
                timestep=_t(0.5))


def _mochi(model, g):
    return dict(hidden_states=_r(g, 1, 4, 2, 8, 8), encoder_hidden_states=_r(g, 1, 16, 16),
                timestep=_t(999), encoder_attention_mask=torch.ones(1, 16, dtype=torch.bool))


def _motif_video(model, g):
    # the test's torch.compile inputs use 4x4; 2 frames instead of 9 keep 32 tokens
    return dict(hidden_states=_r(g, 1, 33, 2, 4, 4), encoder_hidden_states=_r(g, 1, 12, 32),
                timestep=_t(999))


def _qwen_image(model, g):
    return dict(hidden_states=_r(g, 1, 16, 16), encoder_hidden_states=_r(g, 1, 8, 16),
                encoder_hidden_states_mask=torch.ones(1, 8, dtype=torch.long), timestep=_t(1.0),
                img_shapes=[(1, 4, 4)])


def _qwen_image21(model, g):
    # 8 text slots then the target image's 16 tokens as 4 image slots (2x2 tokens each)
    text, slots = 8, 4
    img_mask = torch.zeros(1, text + slots, dtype=torch.bool)
    img_mask[:, text:] = True
    return dict(hidden_states=_r(g, 1, 16, 16), encoder_hidden_states=_r(g, 1, text, 16),
                timestep=_t(1.0), img_shapes=[[(1, 4, 4)]], img_mask=img_mask)


def _omnigen(model, g):
    seq, h, w = 24, 8, 8
    image_tokens = h * w // 4
    attn = seq + 1 + image_tokens
    return dict(hidden_states=_r(g, 1, 4, h, w), timestep=_t(1.0),
                input_ids=torch.randint(0, 10, (1, seq), generator=g),
                input_img_latents=[_r(g, 1, 4, h, w)], input_image_sizes={0: [[0, image_tokens]]},
                attention_mask=torch.ones(1, attn, attn), position_ids=torch.arange(attn)[None])


def _nucleus(model, g):
    return dict(hidden_states=_r(g, 1, 16, 16), encoder_hidden_states=_r(g, 1, 8, 16),
                encoder_hidden_states_mask=torch.ones(1, 8, dtype=torch.long), timestep=_t(1.0),
                img_shapes=[(1, 4, 4)])


def _prior(model, g):
    # the test's inputs at batch 1, with the text mask and the integer timestep the unCLIP and
    # Kandinsky prior pipelines pass (the mask also switches on the causal mask)
    cfg = model.config
    return dict(hidden_states=_r(g, 1, cfg.embedding_dim), timestep=torch.tensor([999]),
                proj_embedding=_r(g, 1, cfg.embedding_dim),
                encoder_hidden_states=_r(g, 1, cfg.num_embeddings, cfg.embedding_dim),
                attention_mask=torch.ones(1, cfg.num_embeddings, dtype=torch.bool))


def _prx(model, g):
    return dict(hidden_states=_r(g, 1, 16, 8, 8), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, 16, model.config.context_in_dim))


def _rfd4_proteina(model, g):
    # 8 protein residues, none of them in-context conditioning, each with a local latent; the
    # conditioning dict holds the two masks the pipeline always adds
    tokens = 8
    none, every = torch.zeros(1, tokens, dtype=torch.bool), torch.ones(1, tokens, dtype=torch.bool)
    return dict(bb_ca=_r(g, 1, tokens, 3), local_latents=_r(g, 1, tokens, model.config.latent_dim),
                bb_ca_time=_t(1.0), local_latents_time=_t(1.0), padding_mask=every,
                token_type=torch.zeros(1, tokens, dtype=torch.long),
                conditioning={"is_in_context_conditioning": none, "supports_local_latent": every})


def _sana(model, g):
    return dict(hidden_states=_r(g, 1, 4, 8, 8), encoder_hidden_states=_r(g, 1, 8, 8),
                timestep=_t(999))


def _sana_video(model, g):
    return dict(hidden_states=_r(g, 1, 16, 2, 8, 8), encoder_hidden_states=_r(g, 1, 12, 16),
                timestep=_t(999))


def _sana_wm(model, g):
    # (B, C, T, H, W) latents, per-frame timesteps (B, 1, T), text (B, 1, L, D) and its mask
    cfg = model.config
    return dict(hidden_states=_r(g, 1, cfg.in_channels, 2, 8, 8),
                timestep=torch.full((1, 1, 2), 999.0),
                encoder_hidden_states=_r(g, 1, 1, 8, cfg.caption_channels),
                mask=torch.ones(1, 8, dtype=torch.long))


def _sana_wm_refiner(model, g):
    f, h, w = 2, 4, 4
    rope = model.build_rotary_emb_for_absolute_positions(
        batch_size=1, frame_positions=list(range(f)), height=h, width=w, device=torch.device("cpu"),
        fps=24.0)
    return dict(hidden_states=_r(g, 1, f * h * w, model.config.in_channels),
                encoder_hidden_states=_r(g, 1, 8, model.config.caption_channels),
                timestep=torch.full((1, f * h * w), 0.9), video_rotary_emb=rope,
                encoder_attention_mask=torch.ones(1, 8))


def _stable_audio(model, g):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    # 16 latent frames; the duration embedding is the global token prepended to the sequence,
    # and the rope covers it too, as in the pipeline
    frames = 16
    cfg = model.config
    rope = get_1d_rotary_pos_embed(cfg.attention_head_dim // 2, frames + 1, use_real=True,
                                   repeat_interleave_real=False)
    return dict(hidden_states=_r(g, 1, cfg.in_channels, frames), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, 6, cfg.cross_attention_input_dim),
                global_hidden_states=_r(g, 1, 1, cfg.global_states_input_dim),
                rotary_embedding=rope)


def _stable_audio3(model, g):
    # the test's inputs at batch 1: 16 latent frames, 4 text tokens, a global vector
    cfg = model.config
    return dict(hidden_states=_r(g, 1, cfg.io_channels, 16), timestep=_t(1.0),
                encoder_hidden_states=_r(g, 1, 4, cfg.cond_token_dim),
                global_hidden_states=_r(g, 1, cfg.global_cond_dim))


def _wan_like(channels: int, text_dim: int, **extra_shapes):
    def inputs(model, g):
        kwargs = dict(hidden_states=_r(g, 1, channels, 2, 8, 8), timestep=_t(999),
                      encoder_hidden_states=_r(g, 1, 12, text_dim))
        kwargs.update({name: _r(g, *shape) for name, shape in extra_shapes.items()})
        return kwargs

    return inputs


def _wan_animate(model, g):
    # 4 generated latent frames (+1 reference) and 13 face frames: the motion encoder's
    # 4 frames per latent frame (+1), at 4x4 latents (20 tokens) instead of the test's 21x16x16
    frames = 4
    return dict(hidden_states=_r(g, 1, 12, frames + 1, 4, 4), timestep=_t(999),
                encoder_hidden_states=_r(g, 1, 12, 16),
                encoder_hidden_states_image=_r(g, 1, 12, 16),
                pose_hidden_states=_r(g, 1, 4, frames, 4, 4),
                face_pixel_values=_r(g, 1, 3, 4 * (frames - 1) + 1, 16, 16))


def _wan_animate2(model, g):
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    # The reference pass (kv_cache_mode="extract") fills the cache once, before the loop; each
    # denoising step is a "cached" call over the generation latents (the test's two passes).
    channels, cond, ref_frames, h, w, text_dim = 16, 20, 2, 4, 4, 32
    grid = torch.tensor([[ref_frames, h // 2, w // 2]], dtype=torch.long)
    clip = _r(g, 1, 4, 1280)
    cache = WanAnimate2KVCache(model.config.num_layers)
    with torch.no_grad():
        model(hidden_states=[_r(g, channels, ref_frames, h, w)], timestep=_t(1.0),
              encoder_hidden_states=[_r(g, 8, text_dim)],
              condition_latents=[_r(g, cond, ref_frames, h, w)], encoder_hidden_states_image=clip,
              kv_cache=cache, kv_cache_mode="extract", seq_len=ref_frames * (h // 2) * (w // 2),
              offset_grid_sizes=grid)
    frames = ref_frames + 1
    return dict(hidden_states=[_r(g, channels, frames, h, w)], timestep=_t(999),
                encoder_hidden_states=[_r(g, 8, text_dim)],
                condition_latents=[_r(g, cond, frames, h, w)], encoder_hidden_states_image=clip,
                kv_cache=cache, kv_cache_mode="cached", seq_len=frames * (h // 2) * (w // 2),
                reference_grid_sizes=grid, origin_len=5, origin_area=[32, 32])


def _z_image(model, g):
    return dict(x=[_r(g, 16, 1, 16, 16)], cap_feats=[_r(g, 16, 16)], t=_t(1.0))


def _temporal(model, g):
    # (batch * frames, C, H, W): 2 frames of 8x8 features
    return dict(hidden_states=_r(g, 2, 4, 8, 8), num_frames=2)


# ----------------------------------------------------------------------------------------------
# The zoo
# ----------------------------------------------------------------------------------------------

_T = "diffusers test"  # short for: config and inputs from diffusers' tests/models/transformers
_NEW = "written from the installed 0.42.1 class (no test in the 0.40.dev snapshot)"


def _spec(cls_name: str, test_blocks: Mapping[str, int], **kwargs) -> ZooEntry:
    video = MODEL_SPECS[cls_name].video
    return ZooEntry(cls_name, MODEL_SPECS[cls_name].tiny, _spec_inputs(cls_name),
                    "ts_compile MODEL_SPECS (package), its example inputs", test_blocks,
                    kind="video" if video else "image", **kwargs)


_ENTRIES = [
    ZooEntry("AceStepTransformer1DModel", dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8,
        patch_size=2, rope_theta=10000.0, rms_norm_eps=1e-06, sliding_window=16),
        _ace_step, _T + " (batch 1)", {"num_hidden_layers": 2}, kind="audio",
        note="music denoiser (audio latents)"),
    ZooEntry("AllegroTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=16, sample_width=8, sample_height=8, sample_frames=8,
        caption_channels=8), _allegro, _T + " (batch 1, 8 text tokens)", {"num_layers": 1},
        kind="video"),
    ZooEntry("AnyFlowFARTransformer3DModel", dict(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=3,
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, text_dim=16,
        freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32,
        gate_value=0.25, deltatime_type="r"), _anyflow_far, _T + " (8x8 instead of 16x16)",
        {"num_layers": 2}, kind="video"),
    ZooEntry("AnyFlowTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        rope_max_seq_len=32, gate_value=0.25, deltatime_type="r"), _anyflow,
        _T + " (8x8 instead of 16x16)", {"num_layers": 2}, kind="video"),
    ZooEntry("AuraFlowTransformer2DModel", dict(
        sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=32, out_channels=4, pos_embed_max_size=256), _aura_flow,
        _T + " (8x8 latent, 8 text tokens instead of 32x32 and 256)",
        {"num_mmdit_layers": 1, "num_single_dit_layers": 1}),
    ZooEntry("BriaFibo2Transformer2DModel", dict(
        in_channels=4, patch_size=2, dim=32, n_layers=3, n_refiner_layers=2, n_heads=2,
        cap_feat_dim=16, injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=4,
        max_num_gist_tokens=8, gist_step=4, gist_min_text_len=4, gist_max_text_len=16,
        axes_dims=(4, 6, 6), axes_lens=(64, 32, 32)), _bria_fibo2, _NEW, {}),
    ZooEntry("BriaFiboTransformer2DModel", dict(
        patch_size=1, in_channels=48, num_layers=2, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=64, text_encoder_dim=32,
        pooled_projection_dim=None, axes_dims_rope=[0, 4, 4]), _bria_fibo,
        _T + " (4x4 latent, 8 text tokens; one text-encoder layer per block)",
        {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("BriaTransformer2DModel", dict(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4]), _flux_like(4, 32), _T + " (8 text tokens)",
        {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("ChromaTransformer2DModel", dict(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8],
        approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1),
        _flux_like(4, 32), _T + " (8 text tokens)", {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("ChronoEditTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-06, image_dim=None, added_kv_proj_dim=None,
        rope_max_seq_len=64, pos_embed_seq_len=None, rope_temporal_skip_len=8), _chronoedit, _T,
        {"num_layers": 2}, kind="video"),
    ZooEntry("CogVideoXTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, patch_size_t=None, temporal_compression_ratio=4,
        max_text_seq_length=8), _cogvideox, _T + " (batch 1)", {"num_layers": 2}, kind="video"),
    ZooEntry("CogView3PlusTransformer2DModel", dict(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=2,
        out_channels=4, text_embed_dim=8, time_embed_dim=8, condition_dim=2, pos_embed_max_size=8,
        sample_size=8), _cogview, _T + " (batch 1)", {"num_layers": 2}),
    ZooEntry("CogView4Transformer2DModel", dict(
        patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=4,
        out_channels=4, text_embed_dim=8, time_embed_dim=8, condition_dim=4), _cogview,
        _T + " (batch 1)", {"num_layers": 2}),
    ZooEntry("ConsisIDTransformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
        cross_attn_interval=1, is_kps=False, is_train_face=True, cross_attn_dim_head=1,
        cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=5, LFE_dim_head=8,
        LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10, LFE_ff_mult=1,
        LFE_num_scale=1), _consisid, _T + " (batch 1)", {"num_layers": 1}, kind="video"),
    ZooEntry("Cosmos3OmniTransformer", dict(
        head_dim=6, hidden_act="relu2", hidden_size=12, intermediate_size=24, latent_channel=2,
        latent_patch_size=1, num_attention_heads=2, num_hidden_layers=2, num_key_value_heads=1,
        patch_latent_dim=2, qk_norm_for_text=False, rms_norm_eps=1e-5, rope_axes_dim=[1, 1, 1],
        rope_theta=1e8, vocab_size=32), _cosmos3,
        _T + " (4x4 latent and 4 text tokens instead of 1x1 and 2)", {"num_hidden_layers": 2},
        latent="vision_tokens", time="vision_timesteps", kind="video",
        note="packed text + vision sequence (text is a causal prefix); vision only, no sound or "
             "action"),
    ZooEntry("CosmosTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        mlp_ratio=2, text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32),
        patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False,
        extra_pos_embed_type="learnable"), _cosmos,
        _T + " without the padding mask (resizing it needs torchvision)", {"num_layers": 2},
        kind="video"),
    _spec("DiTTransformer2DModel", {"num_layers": 1}),
    ZooEntry("DreamLiteTransformer2DModel", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=4,
        cross_attention_dim=16, num_layers=2), _unet_layer(16, 16), _NEW, {}, time=None,
        kind="part", note="a UNet's cross-attention layer (continuous input), not a denoiser"),
    ZooEntry("EasyAnimateTransformer3DModel", dict(
        attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2, num_layers=2,
        out_channels=4, patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16,
        time_embed_dim=8, time_position_encoding_type="3d_rope", timestep_activation_fn="silu"),
        _easyanimate, _T + " (batch 1, 8x8 latent)", {"num_layers": 2, "mmdit_layers": 2},
        kind="video"),
    ZooEntry("ErnieImageTransformer2DModel", dict(
        hidden_size=16, num_attention_heads=1, num_layers=2, ffn_hidden_size=16, in_channels=16,
        out_channels=16, patch_size=1, text_in_dim=16, rope_theta=256, rope_axes_dim=(8, 4, 4),
        eps=1e-06, qk_layernorm=True), _ernie_image, _T + " (8x8 latent)", {"num_layers": 1}),
    ZooEntry("Flux2Transformer2DModel", dict(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4]), _flux2, _T + " (8 text tokens)",
        {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("Flux3Transformer2DModel", dict(
        in_channels=4, cond_in_channels=4, num_layers=2, num_single_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        timestep_channels=32, axes_dims_rope=(4, 4, 4, 4)), _flux3, _NEW, {}),
    _spec("FluxTransformer2DModel", {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("GlmImageTransformer2DModel", dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, text_embed_dim=32, time_embed_dim=16, condition_dim=8,
        prior_vq_quantizer_codebook_size=64), _glm_image, _T, {"num_layers": 1}),
    ZooEntry("HeliosTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_dim=(4, 4, 4), has_multi_term_memory_patch=True,
        guidance_cross_attn=True, zero_history_timestep=True, is_amplify_history=False), _helios,
        _T + " (8x8 latent)", {"num_layers": 2}, kind="video"),
    ZooEntry("HiDreamImageTransformer2DModel", dict(
        patch_size=2, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_channels=[8, 4], text_emb_dim=8,
        num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32), llama_layers=(0, 1, 2, 3), force_inference_output=True),
        _hidream, _T + " (batch 1, 16x16 latent; one llama layer per block)",
        {"num_layers": 1, "num_single_layers": 1},
        time="timesteps"),
    ZooEntry("HunyuanDiT2DModel", dict(
        sample_size=8, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8,
        num_attention_heads=2, cross_attention_dim=8, cross_attention_dim_t5=8,
        pooled_projection_dim=4, hidden_size=16, text_len=4, text_len_t5=4,
        activation_fn="gelu-approximate"), _hunyuan_dit,
        _T + " (batch 1; 4 layers instead of 1, so the last takes a long skip from the first)",
        {"num_layers": 1}),
    ZooEntry("HunyuanImageTransformer2DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=2, num_refiner_layers=2, patch_size=(1, 1), text_embed_dim=16,
        rope_axes_dim=(4, 4)), _hunyuan_image, _NEW, {}),
    ZooEntry("HunyuanVideo15Transformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=2, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16,
        text_embed_2_dim=8, image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16,
        task_type="t2v"), _hunyuan_video15, _T, {"num_layers": 2, "num_refiner_layers": 1},
        kind="video"),
    ZooEntry("HunyuanVideoFramepackTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2,
        num_single_layers=2, num_refiner_layers=2, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        image_condition_type=None, has_image_proj=True, image_proj_dim=16,
        has_clean_x_embedder=True), _framepack, _T,
        {"num_layers": 1, "num_single_layers": 1, "num_refiner_layers": 1}, kind="video"),
    _spec("HunyuanVideoTransformer3DModel",
          {"num_layers": 1, "num_single_layers": 1, "num_refiner_layers": 1}),
    ZooEntry("Ideogram4Transformer2DModel", dict(
        in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        intermediate_size=32, adaln_dim=16, llm_features_dim=24, rope_theta=10000,
        mrope_section=(2, 1, 1), norm_eps=1e-05), _ideogram4, _T, {"num_layers": 2}),
    ZooEntry("JoyImageEditPlusTransformer3DModel", dict(
        patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=16,
        num_layers=2, rope_dim_list=[4, 6, 6], theta=256), _joyimage_plus, _T, {"num_layers": 2}),
    ZooEntry("JoyImageEditTransformer3DModel", dict(
        patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=16,
        num_layers=2, rope_dim_list=[4, 6, 6], theta=256), _joyimage, _T, {"num_layers": 2}),
    ZooEntry("Kandinsky5Transformer3DModel", dict(
        in_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=4,
        patch_size=(1, 2, 2), model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2,
        axes_dims=(4, 2, 2)), _kandinsky5, _NEW, {}, kind="video"),
    ZooEntry("Kandinsky6SRTransformer3DModel", dict(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, model_dim=32, ff_dim=64,
        num_visual_blocks=2, axes_dims=(4, 2, 2), nabla_window=(3, 3, 3)), _kandinsky6_sr, _NEW,
        {}, kind="video", note="video super-resolution refiner (text-free)"),
    ZooEntry("Kandinsky6Transformer3DModel", dict(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16,
        model_dim=32, ff_dim=64, num_text_blocks=2, num_visual_blocks=2, axes_dims=(4, 2, 2),
        visual_cond=False, in_audio_dim=4, out_audio_dim=4, text_token_padding=True, ca_rope=True,
        cross_gates=True, fix_modulation=True), _kandinsky6,
        _NEW + "; the released checkpoints' flags", {}, kind="video+audio",
        extra_latents={"audio_hidden_states": 1}),
    ZooEntry("Krea2Transformer2DModel", dict(
        in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=32, timestep_embed_dim=8, text_hidden_dim=16,
        num_text_layers=3, text_num_attention_heads=2, text_num_key_value_heads=1,
        text_intermediate_size=16, num_layerwise_text_blocks=2, num_refiner_text_blocks=2,
        axes_dims_rope=(4, 2, 2), rope_theta=1000.0, norm_eps=1e-05), _krea2, _T,
        {"num_layers": 2, "num_layerwise_text_blocks": 1, "num_refiner_text_blocks": 1}),
    ZooEntry("LTX2VideoTransformer3DModel", dict(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=16,
        rope_double_precision=False), _ltx2, _T + " (batch 1, 2x4x4 video)", {"num_layers": 2},
        kind="video+audio", extra_latents={"audio_hidden_states": 1}),
    ZooEntry("LTXVideoTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=16), _ltx, _T + " (batch 1, 2x4x4 video)", {"num_layers": 1},
        kind="video"),
    ZooEntry("LatteTransformer3DModel", dict(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=4, num_attention_heads=2,
        caption_channels=8, in_channels=4, cross_attention_dim=8, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-06,
        video_length=2), _latte, _T + " (batch 1, 2 frames: video_length 2)", {"num_layers": 1},
        kind="video"),
    ZooEntry("LongCatAudioDiTTransformer", dict(
        dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32, latent_dim=8, text_conv=False),
        _longcat_audio, _T, {"dit_depth": 2}, kind="audio",
        note="text-to-audio denoiser (audio VAE latents)"),
    ZooEntry("LongCatImageTransformer2DModel", dict(
        patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8]), _flux_like(4, 32, guidance=3.5), _T + " (8 text tokens)",
        {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("Lumina2Transformer2DModel", dict(
        sample_size=16, patch_size=2, in_channels=4, hidden_size=24, num_layers=2,
        num_refiner_layers=2, num_attention_heads=3, num_kv_heads=1, multiple_of=2,
        ffn_dim_multiplier=None, norm_eps=1e-05, scaling_factor=1.0, axes_dim_rope=(4, 2, 2),
        axes_lens=(128, 128, 128), cap_feat_dim=32), _lumina2, _T + " (batch 1)",
        {"num_layers": 2, "num_refiner_layers": 1}),
    ZooEntry("LuminaNextDiT2DModel", dict(
        sample_size=16, patch_size=2, in_channels=4, hidden_size=24, num_layers=2,
        num_attention_heads=3, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None,
        norm_eps=1e-5, learn_sigma=False, qk_norm=True, cross_attention_dim=32,
        scaling_factor=1.0), _lumina_next, _T + " (batch 1, 8x8 latent)", {"num_layers": 2},
        note="its time rises from noise (0) to image (1), the sweep's falls, which changes none "
             "of the checks"),
    ZooEntry("MiniMaxH3Transformer3DModel", dict(
        num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2,
        num_refiner_layers=2, ffn_dim=32, in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2),
        text_dim=8, freq_dim=8, time_embed_hidden_dim=24, time_embed_dim=16, rope_freq_dim=2),
        _minimax_h3, _T + " (batch 1)", {"num_layers": 2, "num_refiner_layers": 2},
        kind="video+audio", extra_latents={"audio_hidden_states": 1},
        note="packed sequence; the time tensor holds the video and audio timesteps"),
    ZooEntry("MiniMaxMusic3Transformer1DModel", dict(
        in_channels=8, condition_dim=16, num_layers=2, num_attention_heads=2, attention_head_dim=8,
        ff_inner_dim=32, rotary_dim=4, fourier_embedding_dim=8), _minimax_music3, _T,
        {"num_layers": 2}, kind="audio", note="music denoiser (audio latents)"),
    ZooEntry("MochiTransformer3DModel", dict(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        pooled_projection_dim=16, in_channels=4, out_channels=None, qk_norm="rms_norm",
        text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16),
        _mochi, _T + " (batch 1, 8x8 latent)", {"num_layers": 2}, kind="video"),
    ZooEntry("MotifVideoTransformer3DModel", dict(
        in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=12,
        num_layers=2, num_single_layers=2, num_decoder_layers=0, mlp_ratio=4.0, patch_size=1,
        patch_size_t=1, qk_norm="rms_norm", norm_type="layer_norm", text_embed_dim=32,
        image_embed_dim=4, rope_theta=256.0, rope_axes_dim=(4, 4, 4),
        enable_text_cross_attention_dual=False, enable_text_cross_attention_single=False),
        _motif_video, _T + " (2 frames of 4x4)", {"num_layers": 1, "num_single_layers": 1},
        kind="video"),
    ZooEntry("NucleusMoEImageTransformer2DModel", dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=16, axes_dims_rope=(8, 4, 4),
        moe_enabled=False, capacity_factors=[8.0, 8.0]), _nucleus, _T, {"num_layers": 2}),
    ZooEntry("OmniGenTransformer2DModel", dict(
        hidden_size=16, num_attention_heads=4, num_key_value_heads=4, intermediate_size=32,
        num_layers=2, pad_token_id=0, vocab_size=1000, in_channels=4, time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]}), _omnigen,
        _T + " (batch 1; 2 layers instead of 20)", {"num_layers": 20}),
    ZooEntry("OvisImageTransformer2DModel", dict(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_single_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        axes_dims_rope=(4, 4, 8)), _flux_like(4, 32), _T + " (8 text tokens)",
        {"num_layers": 1, "num_single_layers": 1}),
    ZooEntry("PRXTransformer2DModel", dict(
        in_channels=16, patch_size=2, context_in_dim=32, hidden_size=32, mlp_ratio=3.5,
        num_heads=2, depth=2, axes_dim=[8, 8], theta=10000), _prx,
        _T + " shrunk: hidden 32 / 2 heads / depth 2 instead of 1792 / 28 / 4 (8x8 latent)",
        {"depth": 4}),
    _spec("PixArtTransformer2DModel", {"num_layers": 1}),
    ZooEntry("PriorTransformer", dict(
        num_attention_heads=2, attention_head_dim=4, num_layers=2, embedding_dim=8,
        num_embeddings=7, additional_embeddings=4), _prior,
        _T + " (batch 1, with the text mask)", {"num_layers": 2}, kind="embedding",
        note="unCLIP / Kandinsky 2 prior: denoises a CLIP image embedding, not an image"),
    ZooEntry("QwenImage21Transformer2DModel", dict(
        patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, context_in_dim=16, mlp_ratio=3, axes_dims_rope=(4, 6, 6)),
        _qwen_image21, _NEW, {}, note="the output covers the text slots too; the image is last",
        to_latent=lambda out: out[:, -16:]),
    ZooEntry("QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4)), _qwen_image, _T, {"num_layers": 2}),
    ZooEntry("RFD4ProteinaTransformer", dict(
        nlayers=4, token_dim=16, nheads=2, dim_cond=16, pair_repr_dim=8, latent_dim=4,
        token_type_emb_dim=4, cath_emb_dim=4, t_emb_dim=16, seq_sep_dim=8, xt_pair_dist_dim=8,
        tri_mult_c=8, num_sequence_classes=8,
        feats_seq=("xt_bb_ca", "xt_local_latents", "token_type"),
        feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
        feats_pair_repr=("xt_bb_ca_pair_dists",)), _rfd4_proteina,
        _NEW + "; only the features that need no structure annotations; 4 trunk layers, so 2 "
        "pair updates", {}, latent="bb_ca", time="bb_ca_time", extra_times=("local_latents_time",),
        extra_latents={"local_latents": 1}, kind="protein",
        note="protein structure denoiser (backbone + local latents); its time rises from noise (0) "
             "to data (1), the sweep's falls, which changes none of the checks"),
    _spec("SD3Transformer2DModel", {"num_layers": 4}),
    ZooEntry("SanaTransformer2DModel", dict(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=4,
        num_attention_heads=2, num_cross_attention_heads=2, cross_attention_head_dim=4,
        cross_attention_dim=8, caption_channels=8, sample_size=8), _sana,
        _T + " (batch 1, 8x8 latent and sample_size 8 instead of 32)", {"num_layers": 1}),
    ZooEntry("SanaVideoTransformer3DModel", dict(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12,
        num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12,
        cross_attention_dim=24, caption_channels=16, mlp_ratio=2.5, dropout=0.0,
        attention_bias=False, sample_size=8, patch_size=(1, 2, 2), norm_elementwise_affine=False,
        norm_eps=1e-06, qk_norm="rms_norm_across_heads", rope_max_seq_len=32), _sana_video,
        _T + " (8x8 latent)", {"num_layers": 2}, kind="video"),
    ZooEntry("SanaWMLTX2RefinerTransformer3DModel", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, caption_channels=16, rope_double_precision=False), _sana_wm_refiner,
        _NEW + "; inputs as the refiner pipeline builds them", {}, kind="video",
        note="autoregressive refiner window; called without its KV cache"),
    ZooEntry("SanaWMTransformer3DModel", dict(
        in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, softmax_every_n=2,
        linear_head_dim=16, chunk_plucker_channels=8, chunk_plucker_post_attn_blocks=2,
        use_chunk_plucker_post_attn=False, image_size=64, caption_channels=16,
        mixed_precision="fp32"), _sana_wm, _NEW + "; no camera conditions", {}, kind="video"),
    ZooEntry("SkyReelsV2Transformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32), _wan_like(4, 16),
        _T + " (8x8 latent)", {"num_layers": 2}, kind="video"),
    ZooEntry("StableAudio3DiTModel", dict(
        io_channels=8, patch_size=1, embed_dim=32, depth=2, num_heads=4, cond_token_dim=16,
        global_cond_dim=12, local_add_cond_dim=5, timestep_features_dim=16, ff_mult=2,
        num_memory_tokens=3, use_differential_attention=False), _stable_audio3,
        _T + " (batch 1)", {"depth": 2}, kind="audio",
        note="text-to-audio denoiser (audio VAE latents)"),
    ZooEntry("StableAudioDiTModel", dict(
        sample_size=4, in_channels=3, num_layers=2, attention_head_dim=4,
        num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=4, time_proj_dim=8,
        global_states_input_dim=8, cross_attention_input_dim=4), _stable_audio,
        "diffusers' pipeline test (tests/pipelines/stable_audio; no model test); 16 frames",
        {"num_layers": 2}, kind="audio", note="text-to-audio denoiser (audio VAE latents)"),
    ZooEntry("Transformer2DModel", dict(
        in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_attention_heads=2,
        attention_head_dim=4, attention_bias=True, num_layers=2, norm_type="ada_norm_zero",
        num_embeds_ada_norm=8, patch_size=2, sample_size=8), _dit_legacy,
        "the DiT test config on the legacy class (patched input, adaLN-zero)", {}),
    ZooEntry("TransformerTemporalModel", dict(
        num_attention_heads=8, attention_head_dim=4, in_channels=4, num_layers=2,
        norm_num_groups=1), _temporal, _T + " (2 frames of 8x8)", {"num_layers": 1}, time=None,
        kind="part", note="a UNet's temporal attention layer, not a denoiser"),
    ZooEntry("WanAnimate2Transformer3DModel", dict(
        patch_size=(1, 2, 2), text_len=16, in_dim=36, dim=128, ffn_dim=256, freq_dim=64,
        text_dim=32, out_dim=16, num_heads=4, num_layers=2, cross_attn_norm=True,
        use_img_emb=True), _wan_animate2,
        _T + " (the generation pass over a cache the reference pass filled)", {"num_layers": 2},
        kind="video"),
    ZooEntry("WanAnimateTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=12,
        latent_channels=4, out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=16, rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16,
        motion_style_dim=8, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16,
        face_encoder_num_heads=2, inject_face_latents_blocks=2), _wan_animate,
        _T + " (5 latent frames of 4x4)", {"num_layers": 2}, kind="video"),
    _spec("WanTransformer3DModel", {"num_layers": 2}),
    ZooEntry("WanVACETransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2],
        vace_in_channels=48), _wan_like(16, 32, control_hidden_states=(1, 48, 2, 8, 8)),
        _T + " (8x8 latent)", {"num_layers": 4}, kind="video"),
    ZooEntry("ZImageTransformer2DModel", dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=16, n_layers=2,
        n_refiner_layers=2, n_heads=1, n_kv_heads=2, qk_norm=True, cap_feat_dim=16,
        rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32]),
        _z_image, _T + " (t = 1 instead of 0)", {"n_layers": 1, "n_refiner_layers": 1},
        latent="x", time="t"),
]

ZOO: dict[str, ZooEntry] = {entry.cls_name: entry for entry in _ENTRIES}


ZERO_INIT_STD = 0.1


def build(entry: ZooEntry, seed: int = 0) -> torch.nn.Module:
    """The model in eval mode, random weights from `seed` (the caller's RNG stream untouched).

    Parameters a class initialises to zero (adaLN-zero gates and final layers, modulation
    tables, norm biases) are drawn from N(0, ZERO_INIT_STD^2) too: with a zero gate a block adds
    nothing, and a wrong block computation would not show in the output (ErnieImage's zero final
    layer even makes every output 0).
    """
    import diffusers

    cls = getattr(diffusers, entry.cls_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**entry.config)
        with torch.no_grad():
            for param in model.parameters():
                if param.is_floating_point() and not param.any():
                    param.normal_(0.0, ZERO_INIT_STD)
    return model.eval()


def block_lists(model: torch.nn.Module) -> dict[str, int]:
    """Every top-level nn.ModuleList of the model and its length (the candidate block stacks)."""
    return {name: len(child) for name, child in model.named_children()
            if isinstance(child, torch.nn.ModuleList)}
