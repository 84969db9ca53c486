"""A few end-to-end checks through Inductor (tens of seconds each on 2 CPU cores)."""

import unittest.mock

import pytest
import torch

import ts_compile

from .conftest import compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

pytestmark = pytest.mark.inductor


def test_inductor_matches_reference_over_two_generations():
    spec = ModelSpec(width=16, lists=(3, 2), tuple_out=True, pre_op=True, post_op=True, seed=5)
    model = build_model(spec)
    x = make_inputs(spec, tokens=8)
    compiled = compile_ts(model, compiler="inductor", order=2, interval=3, warmup=2)
    reference = EagerTaylorSeer(model, block_paths(spec), 2, official_schedule(2, 3))
    def generation():
        for step in range(12):
            t = torch.tensor(1 - step / 12)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-4, atol=1e-5)
        ts_compile.reset(compiled)
        reference.reset()

    from torch._inductor.graph import GraphLowering

    codes = []  # Inductor's generated code: the compute graph's, then the forecast graph's
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False), \
            unittest.mock.patch.object(GraphLowering, "save_output_code", codes.append):
        generation()
        with torch.compiler.set_stance("fail_on_recompile"):
            generation()
    stats = ts_compile.stats(compiled)
    assert stats["graphs"] == 1 and stats["recompiles"] == 0 and not stats["fallbacks"]
    assert stats["forecast_steps"] > stats["computed_steps"]
    # The forecast graph skips Inductor's input asserts (every input is checked already:
    # backend.compile_graph); the compute graph keeps them.
    assert len(codes) == 2, len(codes)
    assert "assert_size_stride(arg" in codes[0] and "assert_size_stride(arg" not in codes[1]


def test_inductor_all_compute_reproduces_uncompiled_flux():
    from ts_compile.cli.toy_models import tiny_flux

    model, make_step_inputs = tiny_flux(size="test")
    compiled = compile_ts(model, compiler="inductor", order=1, schedule=range(4))
    with torch.no_grad():
        for step in range(4):
            kwargs = make_step_inputs(step, 4)
            torch.testing.assert_close(compiled(**kwargs)[0], model(**kwargs)[0],
                                       rtol=1e-4, atol=1e-5)
    assert ts_compile.stats(compiled)["regions"]
