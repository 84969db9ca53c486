"""ts_compile.taylor against the recursion written out here, independently of the package."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ts_compile.taylor import (compute_step_scalars, forecast_from_table, forecast_step_scalars,
                               updated_table)


def expected_tables(steps, features, order):
    """The official recursion: D_0 = F; D_{i+1} = (D_i - D_i_prev) / (s_j - s_{j-1})."""
    table, prev_step = [], None
    for step, feature in zip(steps, features):
        new = [feature.double()]
        for i in range(order):
            if i >= len(table):
                break
            new.append((new[i] - table[i]) / (step - prev_step))
        table, prev_step = new, step
    return table


@settings(max_examples=60, deadline=None)
@given(order=st.integers(0, 4), gaps=st.lists(st.integers(1, 7), min_size=0, max_size=6),
       offset=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_update_and_forecast_match_recursion(order, gaps, offset, seed):
    gen = torch.Generator().manual_seed(seed)
    steps = [0]
    for gap in gaps:
        steps.append(steps[-1] + gap)
    features = [torch.randn(3, 4, generator=gen) for _ in steps]

    table = torch.full((order + 1, 3, 4), float("nan"))  # garbage must never leak through
    filled, last = 0, None
    for step, feature in zip(steps, features):
        dt = 0 if last is None else step - last
        scalars = torch.tensor(compute_step_scalars(order, dt, filled))
        table.copy_(torch.stack(updated_table(table, feature, scalars)))
        filled, last = min(filled + 1, order + 1), step

    expected = expected_tables(steps, features, order)
    assert filled == len(expected)
    for i, row in enumerate(expected):
        torch.testing.assert_close(table[i].double(), row, rtol=1e-4, atol=1e-4)
    for i in range(len(expected), order + 1):
        assert torch.equal(table[i], torch.zeros(3, 4))

    scalars = torch.tensor(forecast_step_scalars(order, offset, filled))
    got = forecast_from_table(table, scalars, torch.float32)
    want = sum(row * offset**i / math.factorial(i) for i, row in enumerate(expected))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)


def test_low_precision_state_and_output_dtype():
    table = torch.zeros(3, 5, dtype=torch.bfloat16)
    feature = torch.randn(5, dtype=torch.float16)
    table.copy_(torch.stack(updated_table(table, feature,
                                          torch.tensor(compute_step_scalars(2, 0, 0)))))
    out = forecast_from_table(table, torch.tensor(forecast_step_scalars(2, 3, 1)), torch.float16)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, feature, rtol=1e-2, atol=1e-2)
