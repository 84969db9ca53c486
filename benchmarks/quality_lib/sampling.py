"""The two samplers (batched classifier-free guidance: one model call per step) and their inputs.

DiT: DDIM (eta 0, diffusers' `DDIMScheduler` on the training betas, "leading" spacing, no x0
clipping as in DiT's own sample.py), epsilon prediction, guidance on epsilon. FLUX-like: `FlowMatchEulerDiscreteScheduler(shift)` sigmas, Euler
on the velocity, guidance on the velocity. `fn` is whatever runs one step: the eager model, a
`torch.compile(..., backend="taylorseer")` of it, or a hooked copy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ts_compile.cli.demo_digits import euler_guided, pack, unpack
from ts_compile.cli.demo_digits import sigmas as flow_sigmas
from ts_compile.integrations.diffusers_inputs import flux_image_ids

from . import models


class Task:
    """One model with its sampler. Subclasses: DitTask, FluxTask."""

    name: str
    model: torch.nn.Module
    guidance: float

    def inputs(self, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise (n, 1, 8, 8) and balanced labels (0..9 repeating) for one seed."""
        g = torch.Generator().manual_seed(10_000 + seed)
        return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % models.NUM_CLASSES

    def step_kwargs(self, x: torch.Tensor, labels: torch.Tensor, t) -> dict:
        raise NotImplementedError

    def example_kwargs(self, n: int) -> dict:
        x, labels = self.inputs(0, n)
        return self.step_kwargs(x, labels, self.time_values(50)[0])

    def time_values(self, steps: int) -> list:
        raise NotImplementedError

    def sample(self, fn: Callable, noise: torch.Tensor, labels: torch.Tensor, steps: int = 50
               ) -> torch.Tensor:
        raise NotImplementedError


class DitTask(Task):
    name = "dit"

    def __init__(self, model: torch.nn.Module, guidance: float = models.GUIDANCE["dit"]) -> None:
        from diffusers import DDIMScheduler

        self.model = model
        self.guidance = guidance
        # clip_sample=False as DiT's sample.py (clip_denoised=False): diffusers' default x0
        # clipping left a grey haze over the background at 50 steps, which fewer steps hide; FD
        # then ranked 10 steps above 50.
        self.scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                       clip_sample=False)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float()

    def time_values(self, steps: int) -> list[int]:
        self.scheduler.set_timesteps(steps)
        return [int(t) for t in self.scheduler.timesteps]

    def step_kwargs(self, x, labels, t) -> dict:
        n = x.shape[0]
        null = torch.full_like(labels, models.NULL_CLASS)
        return dict(hidden_states=torch.cat([x, x]), timestep=torch.full((2 * n,), int(t)),
                    class_labels=torch.cat([labels, null]), return_dict=False)

    def sample(self, fn, noise, labels, steps=50):
        sched = self.scheduler
        sched.set_timesteps(steps)
        x = noise.clone()
        n = x.shape[0]
        for t in sched.timesteps:
            out = fn(**self.step_kwargs(x, labels, int(t)))[0]
            cond, uncond = out[:n], out[n:]
            eps = uncond + self.guidance * (cond - uncond)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        return x


class FluxTask(Task):
    name = "flux"

    def __init__(self, model, ehs_table: torch.Tensor, pooled_table: torch.Tensor,
                 shift: float = models.FLUX_SHIFT, guidance: float = models.GUIDANCE["flux"]
                 ) -> None:
        self.model = model
        self.ehs, self.pooled = ehs_table, pooled_table
        self.shift = shift
        self.guidance = guidance
        self.img_ids = flux_image_ids(4, 4)
        self.txt_ids = torch.zeros(ehs_table.shape[1], 3)

    def sigmas(self, steps: int) -> list[float]:
        return flow_sigmas(self.shift, steps)  # steps + 1 values, the last 0

    def time_values(self, steps: int) -> list[float]:
        return self.sigmas(steps)[:-1]

    def step_kwargs(self, x, labels, t) -> dict:
        n = x.shape[0]
        ids = torch.cat([labels, torch.full_like(labels, models.NULL_CLASS)])
        tokens = pack(x)
        return dict(hidden_states=torch.cat([tokens, tokens]),
                    encoder_hidden_states=self.ehs[ids], pooled_projections=self.pooled[ids],
                    timestep=torch.full((2 * n,), float(t)), img_ids=self.img_ids,
                    txt_ids=self.txt_ids, return_dict=False)

    def sample(self, fn, noise, labels, steps=50):
        ids = torch.cat([labels, torch.full_like(labels, models.NULL_CLASS)])
        conditioning = dict(encoder_hidden_states=self.ehs[ids], pooled_projections=self.pooled[ids],
                            img_ids=self.img_ids, txt_ids=self.txt_ids)
        x = euler_guided(fn, pack(noise), conditioning, self.sigmas(steps), self.guidance)
        return unpack(x, *noise.shape[-2:])


def load_task(name: str, folder: str | None = None) -> Task:
    if name == "dit":
        model, sampler = models.load_dit(folder)
        return DitTask(model, sampler.get("guidance_scale", models.GUIDANCE["dit"]))
    if name == "flux":
        model, ehs, pooled, sampler = models.load_flux(folder)
        return FluxTask(model, ehs, pooled, sampler["shift"], sampler["guidance_scale"])
    raise ValueError(f"unknown model {name!r}")
