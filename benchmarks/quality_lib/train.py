"""Training of the two benchmark models (eager PyTorch, deterministic for a fixed thread count).

DiT: DDPM (1000 steps, linear betas), epsilon MSE. FLUX-like: rectified flow, velocity MSE with
logit-normal sigmas. Both: AdamW lr 3e-4 with 100 warm-up steps, batch 128, grad clip 1.0, 10% of
labels replaced by the null class once per sample (classifier-free guidance), EMA of the weights
(decay min(0.999, (1 + k) / (10 + k))) saved for sampling.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time

import torch

from ts_compile.cli.demo_digits import pack
from ts_compile.integrations.diffusers_inputs import flux_image_ids

from . import models
from .data import load_digits_split
from .machine import load_average

LR = 3e-4
WARMUP = 100
BATCH = 128
CLIP = 1.0
LABEL_DROP = 0.1
LOG_EVERY = 50
DEFAULT_STEPS = 1000  # what the committed checkpoints were trained with


def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, step: int) -> None:
    decay = min(0.999, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), live.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)



class _Trainable(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, cond: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.cond = cond


def train(kind: str, steps: int, seed: int = 0, threads: int = 2, out: str | None = None,
          log=print, save_every: int = 0, init: str | None = None,
          lr_decay: bool = False) -> dict:
    """Train `kind` ("dit" or "flux") for `steps` optimizer steps; save to `out` (also every
    `save_every` steps when > 0); return the log.

    `init`: start from that checkpoint's (EMA) weights instead of random ones (a second phase;
    the optimizer starts fresh, with its warm-up); `lr_decay`: the learning rate falls linearly
    to 0 over the run after the warm-up (a cool-down phase)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train, _, _ = load_digits_split()
    n = len(y_train)
    if kind == "dit":
        from diffusers import DDPMScheduler

        net = models.build_dit()
        cond = None
        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        abar = sched.alphas_cumprod.float()
    elif kind == "flux":
        net = models.build_flux()
        cfg = models.FLUX_CONFIG
        cond = models.FluxConditioning(models.FLUX_TEXT_TOKENS, cfg["joint_attention_dim"],
                                       cfg["pooled_projection_dim"])
        img_ids = flux_image_ids(4, 4)
        txt_ids = torch.zeros(models.FLUX_TEXT_TOKENS, 3)
    else:
        raise ValueError(f"kind must be 'dit' or 'flux', got {kind!r}")
    previous = None
    if init:
        if kind == "dit":
            net.load_state_dict(models.load_dit(init)[0].state_dict())
        else:
            loaded, ehs, pooled, _ = models.load_flux(init)
            net.load_state_dict(loaded.state_dict())
            with torch.no_grad():
                cond.encoder_hidden_states.copy_(ehs)
                cond.pooled_projections.copy_(pooled)
        with open(os.path.join(init, "train_log.json")) as f:
            previous = json.load(f)
    live = _Trainable(net, cond).train()
    ema = copy.deepcopy(live).eval()
    params = sum(p.numel() for p in live.parameters())
    opt = torch.optim.AdamW(live.parameters(), lr=LR, weight_decay=0.0)
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    log(f"[train {kind}] {params / 1e6:.2f} M parameters, {steps} steps, batch {BATCH}, "
        f"seed {seed}, threads {threads}, load {load_average()}")
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP) * (
                1.0 - step / steps if lr_decay else 1.0)
        idx = torch.randint(0, n, (BATCH,), generator=g)
        x0, y = x_train[idx], y_train[idx].clone()
        y[torch.rand(BATCH, generator=g) < LABEL_DROP] = models.NULL_CLASS
        noise = torch.randn(x0.shape, generator=g)
        if kind == "dit":
            t = torch.randint(0, 1000, (BATCH,), generator=g)
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            pred = live.net(xt, timestep=t, class_labels=y, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred, noise)
        else:
            sigma = torch.sigmoid(torch.randn(BATCH, generator=g))
            s = sigma.view(-1, 1, 1, 1)
            xt = (1 - s) * x0 + s * noise
            ehs, pooled = live.cond(y)
            pred = live.net(hidden_states=pack(xt), encoder_hidden_states=ehs,
                            pooled_projections=pooled, timestep=sigma, img_ids=img_ids,
                            txt_ids=txt_ids, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred, pack(noise - x0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(live.parameters(), CLIP)
        opt.step()
        _ema_update(ema, live, step)
        window.append(float(loss.detach()))
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            curve.append((step + 1, sum(window) / len(window)))
            window = []
            el = time.perf_counter() - start
            log(f"[train {kind}] step {step + 1}/{steps} loss {curve[-1][1]:.4f} "
                f"({el:.0f} s, {el / (step + 1):.3f} s/step, load {load_average()})")
        if out and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            # A long run leaves a usable checkpoint (the EMA so far) at every save.
            partial = _record(kind, seed, step + 1, threads, params,
                              time.perf_counter() - start, curve)
            partial.update(lr_decay=lr_decay, init=init, previous=previous)
            _save(kind, ema, out, partial)
    record = _record(kind, seed, steps, threads, params, time.perf_counter() - start, curve)
    record.update(lr_decay=lr_decay, init=init, previous=previous)
    if out:
        _save(kind, ema, out, record)
    return record


def _record(kind: str, seed: int, steps: int, threads: int, params: int, seconds: float,
            curve: list) -> dict:
    return {"model": kind, "seed": seed, "steps": steps, "batch": BATCH, "lr": LR,
            "warmup": WARMUP, "label_drop": LABEL_DROP, "threads": threads,
            "parameters": params, "train_seconds": round(seconds, 1),
            "load_at_end": load_average(), "loss_curve": list(curve),
            "torch": torch.__version__, "machine": platform.machine()}


def _save(kind: str, ema: _Trainable, out: str, record: dict) -> None:
    """The EMA weights in the format the loaders read, and the training log beside them."""
    os.makedirs(out, exist_ok=True)
    net_ema = ema.net
    if kind == "dit":
        net_ema.save_pretrained(out, safe_serialization=True)
        sampler = {"image_size": 8, "in_channels": 1, "num_train_timesteps": 1000,
                   "beta_schedule": "linear", "num_steps": 50,
                   "guidance_scale": models.GUIDANCE["dit"], "cfg": "batched",
                   "null_class": models.NULL_CLASS, "pixel_range": [-1, 1],
                   "clip_sample": False,
                   "notes": "DDIM (eta 0, no x0 clipping, as DiT's sample.py) on "
                            "DDPMScheduler(1000, linear) betas; label 10 is the null class; "
                            "diffusers' per-block label dropout is off."}
        with open(os.path.join(out, "sampler.json"), "w") as f:
            json.dump(sampler, f, indent=2)
    else:
        models.save_flux(net_ema, ema.cond, out)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(record, f, indent=1)


def main(kind: str, argv: list[str] | None = None) -> int:
    """The command line of `benchmarks/train_<kind>.py` (one entry, the model as its argument)."""
    import argparse

    p = argparse.ArgumentParser(description=f"Train the quality benchmark's {kind.upper()} model "
                                            "on scikit-learn's digits (see docs/quality.md).")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=os.path.join(models.CHECKPOINTS, f"{kind}_digits"),
                   help="checkpoint folder (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the checkpoint every this many steps (0: only at the end)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint folder's weights (a second training phase)")
    p.add_argument("--lr-decay", action="store_true",
                   help="learning rate falls linearly to 0 over the run (a cool-down phase)")
    a = p.parse_args(argv)
    train(kind, a.steps, seed=a.seed, threads=a.threads, out=a.out, save_every=a.save_every,
          init=a.init, lr_decay=a.lr_decay)
    return 0
