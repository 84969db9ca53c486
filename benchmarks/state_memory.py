"""Taylor state memory of the real diffusers transformers: cut="block" vs cut="paper" vs official.

    python benchmarks/state_memory.py [--order 2] [--models flux,dit,...]

Part 1 (tiny test configs of tests/diffusers_models.py, real weights not needed): blocks found,
regions per cut and live outputs, from `ts_compile.explain`.

Part 2 (the published configs, at a realistic resolution): every model is built on the `meta`
device (no weights, no memory) and traced once by `ts_compile.explain` with meta inputs; the
state is computed from the traced shapes:

    state bytes = (order + 1) x sum over live outputs of numel x itemsize

- ts_compile block / paper: the live outputs `explain` reports, float32 state (the default
  `state_dtype`), and for the paper cut also bfloat16 (`state_dtype="bfloat16"`).
- official: the official TaylorSeer code caches every branch output of every block (the paper
  cut's modules, all their outputs, whether or not a later step reads them), in bfloat16. Those
  shapes are taken by forward hooks on one eager meta forward of the same model.

Batch 1 everywhere (one call of the denoiser; batched CFG doubles every number, a pipeline
calling the model twice per step keeps two tables).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ts_compile  # noqa: E402

GiB = 2 ** 30


def _flux_ids(h: int, w: int) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def _meta(*shape):
    return torch.empty(*shape, device="meta")


# name -> (diffusers class, published config, setting, inputs(builder))
def _real_models():
    import diffusers as d

    return {
        "flux": ("FLUX.1-dev", d.FluxTransformer2DModel, dict(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
            pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
            "1024x1024: 4096 image + 512 text tokens",
            lambda: dict(hidden_states=_meta(1, 4096, 64), encoder_hidden_states=_meta(1, 512, 4096),
                         pooled_projections=_meta(1, 768), timestep=_meta(1), guidance=_meta(1),
                         img_ids=_flux_ids(64, 64).to("meta"), txt_ids=_meta(512, 3),
                         return_dict=False)),
        "dit": ("DiT-XL/2", d.DiTTransformer2DModel, dict(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
            num_layers=28, sample_size=32, patch_size=2, norm_type="ada_norm_zero",
            num_embeds_ada_norm=1000),
            "256x256: 256 tokens",
            lambda: dict(hidden_states=_meta(1, 4, 32, 32), timestep=_meta(1),
                         class_labels=torch.zeros(1, dtype=torch.long, device="meta"),
                         return_dict=False)),
        "hunyuan_video": ("HunyuanVideo", d.HunyuanVideoTransformer3DModel, dict(
            in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128,
            num_layers=20, num_single_layers=40, num_refiner_layers=2, patch_size=2,
            patch_size_t=1, text_embed_dim=4096, pooled_projection_dim=768,
            rope_axes_dim=(16, 56, 56), guidance_embeds=True),
            "720x1280, 129 frames: 118800 video + 256 text tokens",
            lambda: dict(hidden_states=_meta(1, 16, 33, 90, 160), timestep=_meta(1),
                         encoder_hidden_states=_meta(1, 256, 4096),
                         encoder_attention_mask=_meta(1, 256), pooled_projections=_meta(1, 768),
                         guidance=_meta(1), return_dict=False)),
        "sd3": ("SD3-medium", d.SD3Transformer2DModel, dict(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
            attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
            caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192),
            "1024x1024: 4096 image + 333 text tokens",
            lambda: dict(hidden_states=_meta(1, 16, 128, 128),
                         encoder_hidden_states=_meta(1, 333, 4096),
                         pooled_projections=_meta(1, 2048), timestep=_meta(1), return_dict=False)),
        "pixart": ("PixArt-alpha XL/2", d.PixArtTransformer2DModel, dict(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
            num_layers=28, cross_attention_dim=1152, sample_size=128, patch_size=2,
            caption_channels=4096, norm_type="ada_norm_single", use_additional_conditions=True),
            "1024x1024: 4096 image + 120 text tokens",
            lambda: dict(hidden_states=_meta(1, 4, 128, 128), encoder_hidden_states=_meta(1, 120, 4096),
                         timestep=_meta(1),
                         added_cond_kwargs={"resolution": _meta(1, 2), "aspect_ratio": _meta(1, 1)},
                         return_dict=False)),
        "wan": ("Wan2.1-T2V-1.3B", d.WanTransformer3DModel, dict(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            rope_max_seq_len=1024),
            "480x832, 81 frames: 32760 video + 512 text tokens",
            lambda: dict(hidden_states=_meta(1, 16, 21, 60, 104), timestep=_meta(1),
                         encoder_hidden_states=_meta(1, 512, 4096), return_dict=False)),
    }


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def _explain(model, kwargs, cut, order):
    # Each explain compiles the model's forward once more; without a reset, Dynamo's recompile
    # limit for that code object is reached after a few models and explain sees no graph at all.
    torch._dynamo.reset()
    reports = ts_compile.explain(model, options={"cut": cut, "order": order}, **kwargs)
    if len(reports) != 1 or reports[0].reason_not_applied:
        reasons = [r.reason_not_applied for r in reports]
        raise RuntimeError(f"{len(reports)} graphs, not applied: {reasons}")
    return reports[0]


def _official_bytes(model, kwargs, paths, order) -> int:
    """(order + 1) x every tensor output of every paper-cut module, bf16 (forward hooks)."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(_numel(o.shape) for o in outs if isinstance(o, torch.Tensor))

    handles = [model.get_submodule(p).register_forward_hook(hook) for p in paths]
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        for h in handles:
            h.remove()
    return (order + 1) * total * 2


def _fmt(nbytes: int) -> str:
    return f"{nbytes / GiB:.3f} GiB" if nbytes >= GiB / 100 else f"{nbytes / 2**20:.2f} MiB"


def tiny_table(names, order):
    from tests.diffusers_models import BUILDERS

    rows = []
    for name in names:
        model, make_kwargs = BUILDERS[name]()
        kwargs = make_kwargs(0, 8)
        block = _explain(model, kwargs, "block", order)
        paper = _explain(model, kwargs, "paper", order)
        children = sorted({r.split(".")[-1] for r in paper.regions})
        rows.append([name, type(model).__name__, len(block.regions), len(block.live_outputs),
                     len(paper.regions), ", ".join(children), len(paper.live_outputs),
                     block.state_bytes, paper.state_bytes])
    return tabulate(rows, headers=["model", "class", "blocks (block-cut regions)",
                                   "block: live outputs", "paper: regions",
                                   "paper: branch modules", "paper: live outputs",
                                   "block: state bytes", "paper: state bytes"],
                    tablefmt="github")


def real_table(names, order):
    rows = []
    for name in names:
        title, cls, config, setting, inputs = _real_models()[name]
        start = time.perf_counter()
        with torch.device("meta"):
            model = cls(**config).eval()
        kwargs = inputs()
        try:
            block = _explain(model, kwargs, "block", order)
            paper = _explain(model, kwargs, "paper", order)
            paper_bf16 = (order + 1) * sum(_numel(s) for _, _, s, _ in paper.live_outputs) * 2
            official = _official_bytes(model, kwargs, paper.regions, order)
            method = "meta trace"
        except Exception as err:  # noqa: BLE001 - report, do not hide
            rows.append([title, setting, f"FAILED: {type(err).__name__}: {err}"[:200]]
                        + [""] * 8)
            continue
        rows.append([title, setting, len(block.regions), len(block.live_outputs),
                     _fmt(block.state_bytes), len(paper.regions), len(paper.live_outputs),
                     _fmt(paper.state_bytes), _fmt(paper_bf16), _fmt(official),
                     f"{method} ({time.perf_counter() - start:.0f} s)"])
    return tabulate(rows, headers=["model", "setting", "blocks", "block: live",
                                   "block: state (fp32)", "paper: regions", "paper: live",
                                   "paper: state (fp32)", "paper: state (bf16)",
                                   "official (bf16)", "method"],
                    tablefmt="github")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--models", default="flux,dit,hunyuan_video,sd3,pixart,wan")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    names = args.models.split(",")
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=50)
    print(f"order {args.order}: state bytes = (order + 1) x sum of live output bytes "
          f"= {args.order + 1} x sum(numel x itemsize); batch 1\n")
    if not args.skip_tiny:
        print("## Tiny test configs (tests/diffusers_models.py), float32 state\n")
        print(tiny_table(names, args.order))
        print()
    print("## Published configs on the meta device\n")
    print(real_table(names, args.order))


if __name__ == "__main__":
    main()
