"""`compiler=`: any registered Dynamo backend, or a callable, compiles both rewritten graphs.

Each case runs two generations against the independent eager reference (tests/reference.py).
OpenVINO's backend is an optional extra (`pip install -e ".[openvino]"`); without it that test is
skipped.
"""

from __future__ import annotations

import functools

import pytest
import torch

import ts_compile

from .conftest import compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SPEC = ModelSpec(width=16, lists=(3, 2), tuple_out=True, pre_op=True, post_op=True, seed=5)
ORDER, INTERVAL, WARMUP = 2, 3, 2


def assert_two_generations_match_reference(compiled, rtol=1e-4, atol=1e-5):
    model = build_model(SPEC)
    x = make_inputs(SPEC, tokens=8)
    reference = EagerTaylorSeer(model, block_paths(SPEC), ORDER, official_schedule(WARMUP, INTERVAL))
    with torch.no_grad():
        for _ in range(2):
            for step in range(10):
                t = torch.tensor(1 - step / 10)
                torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=rtol, atol=atol,
                                           msg=f"step {step}")
            ts_compile.reset(compiled)
            reference.reset()
    stats = ts_compile.stats(compiled)
    assert stats["fallbacks"] == [] and stats["forecast_steps"] > 0


def test_a_callable_compiles_both_graphs():
    seen = []

    def my_compiler(gm, example_inputs):
        seen.append(len(example_inputs))
        return gm.forward

    compiled = compile_ts(build_model(SPEC), compiler=my_compiler, order=ORDER,
                          interval=INTERVAL, warmup=WARMUP)
    assert_two_generations_match_reference(compiled)
    assert len(seen) == 2 and seen[0] == seen[1]  # compute and forecast: same inputs


def test_a_registered_backend_name_compiles_both_graphs():
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    calls = []

    def counting_backend(gm, example_inputs):
        calls.append(gm)
        return gm.forward

    if "ts_compile_test_backend" not in _BACKENDS:
        register_backend(counting_backend, name="ts_compile_test_backend")
    else:
        _BACKENDS["ts_compile_test_backend"] = counting_backend
    compiled = compile_ts(build_model(SPEC), compiler="ts_compile_test_backend", order=ORDER,
                          interval=INTERVAL, warmup=WARMUP)
    assert_two_generations_match_reference(compiled)
    assert len(calls) == 2
    # it got functional graphs: the state writes are AOTAutograd's, not the backend's job
    for gm in calls:
        assert not any(n.target is torch.ops.aten.copy_.default for n in gm.graph.nodes)


def _openvino_backend():
    pytest.importorskip("openvino")
    from torch._dynamo.backends.registry import lookup_backend

    return lookup_backend("openvino")


# f32: without the hint OpenVINO computes in bf16 on CPUs with avx512_bf16 (reference/export.md).
OPENVINO_OPTIONS = {"config": {"INFERENCE_PRECISION_HINT": "f32"}}  # ts_compile functionalises


def test_openvino_as_inner_compiler_matches_reference():
    backend = _openvino_backend()
    compiled = compile_ts(build_model(SPEC), order=ORDER, interval=INTERVAL, warmup=WARMUP,
                          compiler=functools.partial(backend, options=OPENVINO_OPTIONS))
    assert_two_generations_match_reference(compiled)


def test_openvino_by_name_matches_reference():
    _openvino_backend()
    compiled = compile_ts(build_model(SPEC), compiler="openvino", order=ORDER,
                          interval=INTERVAL, warmup=WARMUP)
    assert_two_generations_match_reference(compiled, rtol=2e-2, atol=2e-2)  # bf16 on such CPUs
