"""Artefacts shared by the export tests: each is exported once per test session.

AOTInductor compiles take tens of seconds each on 2 CPU cores, so every export test reuses these
(tests/conftest.py imports the fixtures, so that a session builds each once for all modules):
the tiny FLUX of the pipeline tests (exported with the exact call FluxPipeline makes, so the same
artefact runs the pipeline) and the tiny DiT (batch 2: its timestep is a [2] tensor, what DiT
pipelines pass as `t.expand(batch)`). The reference is the Dynamo path,
`torch.compile(..., backend="taylorseer")` with the same options (eager inner compiler).
"""

from __future__ import annotations

import pytest
import torch

from ts_compile.deploy import export

from .diffusers_models import flux_image_ids, tiny_dit
from .pipelines import flux_pipeline

OPTIONS = {"order": 2, "interval": 3, "warmup": 2}
# The artefact resets itself after step 5, and forecasts in DDPM sigma (time="sigma"): the time
# input's position is recorded in the manifest and read on the device by the loaded runner.
DIT_OPTIONS = {**OPTIONS, "num_steps": 6, "time": "sigma",
               "alphas_cumprod": torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0).tolist()}
TOL = dict(rtol=1e-4, atol=1e-5)


def flux_step_kwargs(sigma: float) -> dict:
    """FluxPipeline's transformer call at 32x32 (guidance off, joint_attention_kwargs={})."""
    g = torch.Generator().manual_seed(11)
    return dict(hidden_states=torch.randn(1, 64, 16, generator=g), timestep=torch.tensor([sigma]),
                guidance=None, pooled_projections=torch.randn(1, 32, generator=g),
                encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                txt_ids=torch.zeros(8, 3), img_ids=flux_image_ids(8, 8),
                joint_attention_kwargs={}, return_dict=False)


@pytest.fixture(scope="session")
def flux(tmp_path_factory):
    pipe, make_kwargs = flux_pipeline(cfg=True)
    path = export(pipe.transformer, (), flux_step_kwargs(1.0), options=OPTIONS,
                  path=tmp_path_factory.mktemp("flux") / "flux.tsaot")
    return pipe, make_kwargs, path


@pytest.fixture(scope="session")
def dit(tmp_path_factory):
    model, make_kwargs = tiny_dit()
    path = export(model, (), make_kwargs(0, 6), options=DIT_OPTIONS,
                  path=tmp_path_factory.mktemp("dit") / "dit.tsaot")
    return model, make_kwargs, path


def dit_runner_against_dynamo(model, make_kwargs, path, adjust=lambda kwargs: kwargs):
    """Two 6-step DiT generations without reset (num_steps ends each): the artefact loaded from
    `path` against the Dynamo path, call by call. Returns (runner, compiled)."""
    from ts_compile.deploy import load

    from .conftest import compile_ts

    runner = load(path, options=DIT_OPTIONS)
    compiled = compile_ts(model, **DIT_OPTIONS)
    with torch.no_grad():
        for generation in range(2):
            for step in range(6):
                kwargs = adjust(make_kwargs(step, 6))
                torch.testing.assert_close(runner(**kwargs)[0], compiled(**kwargs)[0], **TOL,
                                           msg=f"generation {generation} step {step}")
    return runner, compiled
