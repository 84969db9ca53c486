"""The graphs' calling convention (calling.py): the state layout and the time input's finder that
the backend, the runtime, export and the loaded runner share."""

from __future__ import annotations

import array

import pytest
import torch

from ts_compile import ArtefactError, OptionError, TaylorSeerOptions
from ts_compile.calling import StateLayout, clock_position, first_positions, time_position
from ts_compile.deploy import export
from ts_compile.passes import TableSpec
from ts_compile.state import TaylorState

from .models import ModelSpec, build_model, make_inputs

TABLES = (TableSpec("blocks.0", 0, "out0", (2, 3, 8), torch.float16),
          TableSpec("blocks.1", 1, "out1", (2, 5), torch.float32))


def test_graph_inputs_are_user_inputs_then_each_tables_rows_then_the_scalars():
    layout = StateLayout.of(TABLES, TaylorSeerOptions(order=2, state_dtype="bfloat16"))
    state = TaylorState(layout, layout.static_shapes(), torch.device("cpu"))
    user = (torch.ones(1), 7, None)
    flat = layout.graph_inputs(user, state)
    assert layout.num_state_inputs == 2 * 3 + 1 == len(flat) - len(user)
    assert list(layout.user_inputs(flat)) == list(user)
    rows, scalars = layout.state_inputs(flat)[:-1], layout.state_inputs(flat)[-1]
    assert [tuple(r.shape) for r in rows] == [(2, 3, 8)] * 3 + [(2, 5)] * 3
    assert all(r.dtype == torch.bfloat16 for r in rows)  # the state dtype, not the outputs'
    assert scalars is state.scalars and scalars.dtype == torch.float32
    assert scalars.numel() == layout.scalar_count
    # the bytes formula counts what was allocated
    assert layout.nbytes() == state.nbytes == sum(r.numel() * r.element_size() for r in rows)


def test_manifest_record_round_trips():
    layout = StateLayout.of(TABLES, TaylorSeerOptions(order=1))
    record = layout.to_manifest()
    assert record["bytes"] == 2 * (2 * 3 * 8 + 2 * 5) * 4
    assert StateLayout.from_manifest(record) == layout


def test_time_and_clock_positions():
    positions = first_positions([("x", 0), ("timestep", 1), ("t", 2), ("timestep", 3)])
    assert positions == {"x": 0, "timestep": 1, "t": 2}  # an input seen twice: its first place
    step = TaylorSeerOptions()
    assert time_position(positions, step) is None  # time="step" reads no input
    assert time_position(positions, TaylorSeerOptions(time="timestep", time_input="t")) == 2
    assert clock_position(positions, TaylorSeerOptions(time_input="t")) == 2
    assert clock_position(positions, step) == 1  # the first of the usual names
    assert clock_position({"x": 0}, step) is None
    with pytest.raises(OptionError, match=r"'sigma'.*\(inputs: x, timestep, t\)"):
        time_position(positions, TaylorSeerOptions(time="timestep", time_input="sigma"))


def test_export_names_a_time_input_the_call_does_not_pass(tmp_path):
    spec = ModelSpec(width=8, lists=(2,))
    model = build_model(spec).eval()
    with pytest.raises(ArtefactError, match="ts_compile.export: option time='timestep' reads the "
                                            "forward argument 'timestep'"):
        export(model, (make_inputs(spec), torch.tensor(1.0)), path=tmp_path / "a.tsaot",
               options={"time": "timestep"})
    assert list(tmp_path.iterdir()) == []


def test_live_elements_inverts_state_bytes():
    from ts_compile.calling import live_elements, state_bytes

    for order, dtype in [(0, torch.float32), (2, torch.float32), (3, torch.bfloat16)]:
        nbytes = state_bytes([(2, 3), (4,)], order, dtype)
        assert live_elements(nbytes, order, dtype) == 10


def test_scalars_written_packed_equal_those_written_as_floats_and_a_wrong_length_is_refused():
    """The forecast step writes its cached scalars as float32 memory (`forecast_scalars_f32`),
    the computed step as a list: both land the same, the counters after them untouched."""
    from ts_compile.taylor import Forecaster

    layout = StateLayout.of(TABLES, TaylorSeerOptions(order=2))
    forecaster = Forecaster("hermite", 2, 0.7)
    values = forecaster.forecast_scalars(7, [5, 2], 3)
    assert list(forecaster.forecast_scalars_f32(7, [5, 2], 3)) == pytest.approx(values, rel=1e-7)
    states = [TaylorState(layout, layout.static_shapes(), torch.device("cpu")) for _ in range(2)]
    for state in states:
        state.scalars.fill_(-1.0)
    states[0].write_scalars(values)
    states[1].write_scalars(forecaster.forecast_scalars_f32(7, [5, 2], 3))
    torch.testing.assert_close(states[1].scalars, states[0].scalars, rtol=0, atol=0)
    tail = states[0].scalars[len(values):]
    assert tail.numel() > 0 and (tail == -1.0).all()  # the device-side counters
    with pytest.raises(ValueError):
        states[1].write_scalars(array.array("f", values[:-1]))
