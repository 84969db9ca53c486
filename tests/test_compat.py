"""compile_isolated on both of its paths: torch's `isolate_recompiles` where torch has it, and the
fresh-code fallback used on older torch (forced here by clearing the feature flag)."""

import inspect

import pytest
import torch

import ts_compile
from ts_compile import _compat

from .conftest import compile_ts
from .models import ModelSpec, block_paths, build_model, make_inputs
from .reference import EagerTaylorSeer, official_schedule

SPEC = ModelSpec(width=8, lists=(2, 2), tuple_out=True, seed=3)
PATHS = [
    pytest.param(True, id="isolate_recompiles", marks=pytest.mark.skipif(
        not _compat.HAS_ISOLATE_RECOMPILES, reason="this torch has no isolate_recompiles")),
    pytest.param(False, id="fresh-code"),
]


@pytest.fixture(params=PATHS)
def isolated_path(request, monkeypatch):
    monkeypatch.setattr(_compat, "HAS_ISOLATE_RECOMPILES", request.param)
    return request.param


def _more_than_the_recompile_budget() -> int:
    return torch._dynamo.config.recompile_limit + 4


def _graphs_captured(compile_fn, model, args, times: int) -> int:
    """How many of `times` compiles of `model`, each with a new backend, got a graph from Dynamo."""
    captured = 0
    for _ in range(times):
        got = []

        def capture(gm, example_inputs, got=got):
            got.append(gm)
            return gm

        with torch.no_grad():
            compile_fn(model, backend=capture)(*args)
        captured += bool(got)
    return captured


def _check_generation(compiled, model, x, steps: int = 9) -> None:
    """One generation of `compiled` against the reference; its first generation (stats count all)."""
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(1, 3))
    with torch.no_grad():
        for step in range(steps):
            t = torch.tensor(1.0 - step / steps)
            torch.testing.assert_close(compiled(x, t), reference(x, t), rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"step {step}: {m}")
    stats = ts_compile.stats(compiled)
    assert (stats["computed_steps"], stats["forecast_steps"]) == (3, steps - 3)
    assert stats["regions"] == block_paths(SPEC) and not stats["fallbacks"]


def test_fresh_caller_passes_every_kind_of_argument_on_unchanged():
    class AllKinds(torch.nn.Module):
        def forward(self, a, /, b, c=2, *args, d, e=5, **kw):
            return (a, b, c, args, d, e, kw)

    class KeywordOnly(torch.nn.Module):
        def forward(self, a, b=1, *, k=3):
            return (a, b, k)

    calls = {AllKinds(): [((1, 2), {"d": 4}), ((1, 2, 3, 9, 9), {"d": 4, "e": 6, "z": 7})],
             KeywordOnly(): [((1,), {}), ((1, 2), {"k": 4})]}
    for module, arguments in calls.items():
        caller = _compat._fresh_caller(module)
        assert inspect.signature(caller) == inspect.signature(module.forward)
        for args, kwargs in arguments:
            assert caller(*args, **kwargs) == module(*args, **kwargs)
    first, second = (_compat._fresh_caller(KeywordOnly()) for _ in range(2))
    assert first.__func__.__code__ is not second.__func__.__code__  # a cache of its own each


def test_plain_compiles_share_the_forwards_budget():
    # Why the isolation is needed: compiles of one module with new backends use up its forward's
    # recompile budget, after which the module silently runs uncompiled.
    model, x = build_model(SPEC), make_inputs(SPEC)
    times = _more_than_the_recompile_budget()
    assert _graphs_captured(torch.compile, model, (x, torch.tensor(0.5)), times) < times


def test_compile_isolated_gets_a_graph_every_time(isolated_path):
    model, x = build_model(SPEC), make_inputs(SPEC)
    times = _more_than_the_recompile_budget()
    assert _graphs_captured(_compat.compile_isolated, model, (x, torch.tensor(0.5)), times) == times


def test_repeated_explain_leaves_the_model_compilable(isolated_path):
    model, x = build_model(SPEC), make_inputs(SPEC)
    for _ in range(_more_than_the_recompile_budget()):
        (report,) = ts_compile.explain(model, x, torch.tensor(0.5), options={"order": 1})
        assert report.regions == block_paths(SPEC)
    compiled = compile_ts(model, order=2, interval=3, warmup=1)
    _check_generation(compiled, model, x)
    assert ts_compile.stats(compiled)["recompiles"] == 0


def test_isolated_taylorseer_copies_forecast_and_reset(isolated_path):
    # benchmarks/speed.py's use: more compiled copies of one model than the recompile budget, each
    # with its own state, driven through ts_compile.reset and stats.
    model, x = build_model(SPEC), make_inputs(SPEC)
    copies = [_compat.compile_isolated(model, backend="taylorseer", fullgraph=True, options={
        "order": 2, "interval": 3, "warmup": 1, "compiler": "eager"})
        for _ in range(_more_than_the_recompile_budget())]
    for compiled in copies:
        _check_generation(compiled, model, x)
    ts_compile.reset(copies[0])
    reference = EagerTaylorSeer(model, block_paths(SPEC), 2, official_schedule(1, 3))
    with torch.no_grad():  # a new generation after the reset
        for step in range(4):
            t = torch.tensor(1.0 - step / 9)
            torch.testing.assert_close(copies[0](x, t), reference(x, t), rtol=1e-5, atol=1e-5)
    assert ts_compile.stats(copies[0])["computed_steps"] == 3 + 2


@pytest.mark.skipif(not _compat.HAS_ISOLATE_RECOMPILES, reason="this torch has no isolate_recompiles")
def test_explain_reports_the_same_on_both_paths(monkeypatch):
    model, x = build_model(SPEC), make_inputs(SPEC)
    reports = []
    for flag in (True, False):
        monkeypatch.setattr(_compat, "HAS_ISOLATE_RECOMPILES", flag)
        reports.append(ts_compile.explain(model, x, torch.tensor(0.5), options={"order": 2}))
    native, fallback = reports
    assert [str(r) for r in fallback] == [str(r) for r in native]
    assert [r.guarded_graph for r in fallback] == [r.guarded_graph for r in native]


def test_a_dict_version_reader_is_used_only_where_the_tag_changes(monkeypatch):
    """`module_guards` fingerprints the module tree by dict version tags where this torch and
    Python have them (the fallback, ids, is tested in tests/test_guard_filter.py)."""
    import torch._C._dynamo.guards as dynamo_guards

    from ts_compile import _compat

    if _compat.DICT_VERSION is not None:
        probe = {}
        before = _compat.DICT_VERSION(probe)
        probe["k"] = 1
        assert _compat.DICT_VERSION(probe) != before
    monkeypatch.setattr(dynamo_guards, "dict_version", lambda d: 0)  # a tag that never moves
    assert _compat.dict_version_reader() is None
    monkeypatch.delattr(dynamo_guards, "dict_version")  # a torch without the reader
    assert _compat.dict_version_reader() is None


def test_a_tensor_layout_check_is_used_only_where_it_tells_changes_apart(monkeypatch):
    """`module_guards` checks the parameters' layouts with torch's TensorGuards where it behaves
    as the probe expects (the Python fallback is tested in tests/test_guard_filter.py)."""
    import torch._C._dynamo.guards as dynamo_guards

    from ts_compile import _compat

    if _compat.TENSOR_LAYOUT_CHECK is not None:
        a, b = torch.zeros(2, 3), torch.zeros(4)
        check = _compat.TENSOR_LAYOUT_CHECK([a, b])
        assert check(a, b) and not check(a.t(), b) and not check(a, b.float().double())

    class Blind:  # a check that never sees a change
        def __init__(self, *tensors, **kwargs):
            pass

        def check(self, *tensors):
            return True

    monkeypatch.setattr(dynamo_guards, "TensorGuards", Blind)
    assert _compat.tensor_layout_checker() is None
    monkeypatch.delattr(dynamo_guards, "TensorGuards")  # a torch without it
    assert _compat.tensor_layout_checker() is None
