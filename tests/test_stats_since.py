"""`ts_compile.stats` counts are cumulative across generations; `since=` gives one generation's.

The expected counts come from the independent schedule of tests/reference.py.
"""

import pytest
import torch

import ts_compile

from .conftest import compile_ts
from .models import ModelSpec, build_model, make_inputs
from .reference import official_schedule

SPEC = ModelSpec(width=8, lists=(3,), seed=3)
INTERVAL, WARMUP = 3, 2


def _generation(compiled, x, steps):
    with torch.no_grad():
        for step in range(steps):  # the time goes back up at each new generation: no reset
            compiled(x, torch.tensor(1.0 - step / steps))


def _expected(steps):
    computed = sum(official_schedule(WARMUP, INTERVAL)(s) for s in range(steps))
    return computed, steps - computed


def test_counts_are_cumulative_and_since_gives_one_generation():
    compiled = compile_ts(build_model(SPEC), order=2, interval=INTERVAL, warmup=WARMUP)
    x = make_inputs(SPEC)
    lengths = (11, 7, 9)
    before = ts_compile.stats(compiled)
    for steps in lengths:
        _generation(compiled, x, steps)
        now = ts_compile.stats(compiled)
        one = ts_compile.stats(compiled, since=before)
        assert (one["computed_steps"], one["forecast_steps"]) == _expected(steps)
        assert one["recompiles"] == 0 and one["fallbacks"] == []
        assert one["regions"] == now["regions"] and one["state_bytes"] == now["state_bytes"]
        before = now
    totals = [sum(_expected(n)[kind] for n in lengths) for kind in (0, 1)]
    assert [now["computed_steps"], now["forecast_steps"]] == totals


def test_since_from_another_model_or_not_a_stats_result_is_refused():
    x = make_inputs(SPEC)
    busy = compile_ts(build_model(SPEC), order=1, interval=INTERVAL, warmup=WARMUP)
    idle = compile_ts(build_model(SPEC), order=1, interval=INTERVAL, warmup=WARMUP)
    _generation(busy, x, 6)
    with pytest.raises(ValueError, match="computed_steps.*went down"):
        ts_compile.stats(idle, since=ts_compile.stats(busy))
    with pytest.raises(ValueError, match="lacks computed_steps"):
        ts_compile.stats(busy, since={"forecast_steps": 0})
    with pytest.raises(TypeError, match="got int"):
        ts_compile.stats(busy, since=3)
