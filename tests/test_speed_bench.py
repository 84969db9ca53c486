"""benchmarks/speed.py at a tiny size: the table comes out with the asked rows and sane values."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str, script: str):
    """A benchmark script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _speed():
    return _load("speed_bench", "speed.py")


def _call_overhead():
    return _load("call_overhead", "call_overhead.py")


ROWS = ["eager", "ts-N3-o1-block", "ts-N5-o2-paper", "diffusers-eager"]


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| row"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_tiny_run_prints_the_table(capsys):
    speed = _speed()
    rc = speed.main(["--size", "tiny", "--steps", "6", "--repeats", "1", "--threads", "1",
                     "--compiler", "eager", "--host-calls", "300", "--rows", ",".join(ROWS)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = _table_rows(out)
    assert set(rows) == {"inductor", *ROWS}, out  # the baseline is always added
    expected = {"eager": 6, "inductor": 6, "diffusers-eager": 4,  # diffusers: 0,1,2,4
                "ts-N3-o1-block": 4,  # warm-up 3, then (s - 2) % 3 == 0: 0,1,2,5
                "ts-N5-o2-paper": 3}  # 0,1,2
    for key, cells in rows.items():
        assert cells[2] == f"{expected[key]}/6", cells
        flops, speedup, efficiency = (float(cells[i]) for i in (3, 5, 6))
        assert flops >= 1.0 and speedup > 0 and efficiency > 0, cells
        median = float(cells[4].split()[0])
        assert median > 0, cells
        if key.startswith("ts-"):
            assert float(cells[9]) > 0 and cells[13].endswith("MiB"), cells  # forecast step, state
            assert cells[14] == "0" and cells[15] == "0", cells  # graph breaks, recompiles
        if key.startswith(("ts-", "diffusers-")) or key == "inductor":
            assert 0 < float(cells[7]) <= 1.5, cells  # of floor: the schedule's floor-bound time
        else:
            assert cells[7] == "-", cells
        if key in ("ts-N3-o1-block", "diffusers-eager"):  # both forecast some of the 6 steps
            assert float(cells[10]) > 0, cells  # forecast step / non-block step
    assert "non-block" not in rows  # timed beside the rows, reported under the table
    assert re.search(r"non-block step: [\d.]+ ms \(the model with its block lists emptied", out)
    assert re.search(r"a whole call through torch.compile with both graphs stubbed out .*: "
                     r"[\d.]+ us per call, of which the runtime [\d.]+ us", out)
    assert rows["inductor"][5] == "1.00"
    assert re.search(r"\(a\) the runtime's own host work per call", out)
    assert re.search(r"ts-N\d-o\d-\w+: [\d.]+ us per call", out)
    assert "== (d) Taylor state for FLUX.1-dev" in out and "0.141 GiB" in out


def test_per_step_table_marks_the_computed_steps_and_bounds_from_its_medians(capsys):
    speed = _speed()
    rc = speed.main(["--size", "tiny", "--steps", "6", "--repeats", "2", "--threads", "1",
                     "--compiler", "eager", "--host-calls", "300", "--rows", "ts-N3-o1-block",
                     "--no-compile-probe", "--per-step"])
    out = capsys.readouterr().out
    assert rc == 0, out
    part = out.split("per step, median ms")[1]
    lines = [ln for ln in part.splitlines() if re.match(r"\| \d+ ", ln)]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert [int(c[0]) for c in cells] == list(range(6)), part
    header = [c.strip() for c in part.splitlines()[1].strip("|").split("|")]
    assert header == ["step", "inductor", "ts-N3-o1-block", "non-block", "floor-in-rhythm"], header
    ts = [c[2] for c in cells]
    assert [k for k, c in enumerate(ts) if c.endswith(" C")] == [0, 1, 2, 5], ts  # warm-up 3
    assert all(c[1].endswith(" C") and not c[3].endswith(" C") for c in cells)
    # the floor in rhythm runs the full model exactly where the row computes
    assert [k for k, c in enumerate(cells) if c[4].endswith(" C")] == [0, 1, 2, 5], cells
    rhythm_ms = [float(c[4].split()[0]) for c in cells]  # full steps there, non-block ones not
    assert min(rhythm_ms[k] for k in (0, 1, 2, 5)) > max(rhythm_ms[k] for k in (3, 4)), cells
    rhythm = re.search(r"floor in rhythm: ([\d.]+) ms per generation", out)
    assert rhythm and float(rhythm[1]) > 0, out
    assert re.search(r"ts-N3-o1-block: [\d.]+ of the floor in rhythm", out), out
    # the floor in rhythm against the table's bound, from the table's own two step times
    steps_line = re.search(r"non-block step: ([\d.]+) ms .* Inductor's full step ([\d.]+) ms", out)
    own = re.search(r"floor in rhythm: ([\d.]+) of the table's floor bound \(([\d.]+) ms\)", out)
    assert steps_line and own, out
    expected = 4 * float(steps_line[2]) + 2 * float(steps_line[1])  # 4 computed of 6
    assert abs(float(own[2]) - expected) < 0.01, out
    assert abs(float(own[1]) - float(own[2]) / float(rhythm[1])) < 0.02, out
    ms = lambda cell: float(cell.split()[0])  # noqa: E731
    total = sum(ms(c[2]) for c in cells)
    bound = sum(ms(c[1]) if k in (0, 1, 2, 5) else ms(c[3]) for k, c in enumerate(cells))
    found = re.search(r"ts-N3-o1-block: sum of per-step medians ([\d.]+) ms, floor bound from "
                      r"the same medians ([\d.]+) ms: ([\d.]+) of the floor", part)
    assert found, part
    assert abs(float(found[1]) - total) < 0.02 and abs(float(found[2]) - bound) < 0.02, part
    assert abs(float(found[3]) - bound / total) < 0.02, part
    # its forecast steps (3, 4) against the floor in rhythm's and the loop's at those indices
    pair = re.search(r"ts-N3-o1-block: forecast steps ([\d.]+) ms .* same indices ([\d.]+) ms "
                     r"\(([\d.]+)x\), the non-block step in its own loop ([\d.]+) ms", part)
    assert pair, part
    mid = lambda a, b: (a + b) / 2  # noqa: E731 - the median of two
    assert abs(float(pair[1]) - mid(ms(cells[3][2]), ms(cells[4][2]))) < 0.002, part
    assert abs(float(pair[2]) - mid(ms(cells[3][4]), ms(cells[4][4]))) < 0.002, part
    assert abs(float(pair[4]) - mid(ms(cells[3][3]), ms(cells[4][3]))) < 0.002, part


def test_free_tensors_flag_applies_to_every_row_and_the_rows_still_run(capsys):
    import torch

    speed = _speed()
    # The flag sets Dynamo's process-wide config; the patch puts it back after the run.
    with torch._dynamo.config.patch(install_free_tensors=False):
        rc = speed.main(["--size", "tiny", "--steps", "6", "--repeats", "1", "--threads", "1",
                         "--compiler", "eager", "--host-calls", "300", "--free-tensors",
                         "--rows", "ts-dsched-o2-block-mg"])
        assert torch._dynamo.config.install_free_tensors
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "install_free_tensors=True (every row)" in out
    cells = _table_rows(out)["ts-dsched-o2-block-mg"]
    assert cells[14] == "0" and cells[15] == "0", cells  # graph breaks, recompiles
    assert float(cells[9]) > 0, cells  # it forecast


def test_adaptive_row_is_calibrated_to_the_fixed_schedules_count(capsys):
    speed = _speed()
    rc = speed.main(["--size", "tiny", "--steps", "12", "--repeats", "1", "--threads", "1",
                     "--compiler", "eager", "--host-calls", "300",
                     "--rows", "ts-N5-o2-block,ts-adaptive-o2-block"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = _table_rows(out)
    # warm-up 3, then (s - 2) % 5 == 0: 0, 1, 2, 7; adaptive calibrated to the same count
    assert rows["ts-N5-o2-block"][2] == rows["ts-adaptive-o2-block"][2] == "4/12", out
    assert float(rows["ts-adaptive-o2-block"][9]) > 0, out  # it forecast
    assert re.search(r"ts-adaptive-o2-block: tolerance [\d.e+-]+ computes 4 steps", out), out
    assert re.search(r"ts-adaptive-o2-block: [\d.]+ us per call", out), out  # section (a)


def test_evict_mib_writes_its_buffer_before_each_step_is_timed(capsys, monkeypatch):
    speed = _speed()
    _, noise, inputs = speed.build_model("tiny")
    assert speed.evicting(inputs, 0) is inputs
    clock = [0.0]  # a fake perf_counter: the inputs (and the write) take 100, a call 1

    def slow_inputs(x, sigma):
        clock[0] += 100.0
        return inputs(x, sigma)

    evicted = speed.evicting(slow_inputs, 1)
    assert evicted.buffer.numel() * 4 == 2**20
    seen = []

    def call(**kw):  # each call sees the buffer written once more: the write came before it
        seen.append(float(evicted.buffer[-1]))
        clock[0] += 1.0
        return (torch.zeros_like(kw["hidden_states"]),)

    monkeypatch.setattr(speed.time, "perf_counter", lambda: clock[0])
    step_times: list[float] = []
    speed.sample(call, noise, evicted, 3, step_times)
    monkeypatch.undo()
    assert seen == [1.0, 2.0, 3.0]
    assert step_times == [1.0, 1.0, 1.0]  # neither the write nor the inputs in a step's time
    assert evicted(noise, 0.5).keys() == inputs(noise, 0.5).keys()
    rc = speed.main(["--size", "tiny", "--steps", "6", "--repeats", "1", "--threads", "1",
                     "--compiler", "eager", "--host-calls", "300", "--no-compile-probe",
                     "--evict-mib", "1", "--rows", "ts-dsched-o2-block-mg"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "1 MiB written before each timed call (--evict-mib)" in out
    assert float(_table_rows(out)["ts-dsched-o2-block-mg"][9]) > 0, out  # it forecast


@pytest.mark.parametrize("argv,needle", [
    (["--rows", "eager,nope"], "unknown row(s) 'nope'"),
    (["--size", "huge"], "--size must be one of"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "ten"], "invalid int value"),
    (["--compiler", "tvm"], "--compiler must be"),
    (["--evict-mib", "-1"], "--evict-mib must be >= 0"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    rc = _speed().main(argv)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert lines[0].startswith("speed.py: error:")
    assert captured.out == ""


def test_forecast_step_script_runs_with_and_without_the_count(capsys):
    module = _load("forecast_step", "forecast_step.py")
    assert module.main(["--size", "test", "--compiler", "eager", "--repeat", "20"]) == 0
    assert "as shipped: forecast graph alone ms" in capsys.readouterr().out


def test_call_overhead_table_has_a_row_per_variant(capsys):
    module = _call_overhead()
    assert module.main(["--variants", "default,skip-module-guards+heap-malloc", "--compiler",
                        "eager", "--repeats", "1"]) == 0
    rows = _table_rows(capsys.readouterr().out)
    rows.pop("variant")  # the header
    assert set(rows) == {"default", "skip-module-guards+heap-malloc"}, rows
    for cells in rows.values():
        forecast, graph = map(float, cells[1:3])
        in_situ, after_computed = map(float, re.fullmatch(r"(\d+) \((\d+)\)", cells[3]).groups())
        runtime = float(cells[4])
        floor_graph, floor_around = map(float, re.fullmatch(r"(\d+) / (\d+)", cells[5]).groups())
        stubs, non_block, ratio = map(float, cells[6:9])
        assert forecast > graph > 0 and stubs > 0 and non_block > 0, cells
        assert forecast > in_situ + runtime and in_situ > 0 and after_computed > 0, cells
        assert runtime > 0 and floor_graph > 0 and floor_around > 0, cells
        assert abs(ratio - forecast / non_block) < 0.02 * ratio, cells
        assert cells[9] == "0", cells  # no recompiles


def _one_generation_run():
    """(call_overhead, speed, schedule, compiled, noise, inputs, runtime): the benchmarks' tiny
    model compiled with taylorseer (eager inner compiler, diffusers' schedule), one generation
    run, and its graph's runtime; what the measurement-only levers record from."""
    from ts_compile.api import controller_of

    call_overhead, speed = _call_overhead(), _speed()
    steps = call_overhead.STEPS
    schedule = speed.diffusers_schedule(steps, speed.DIFFUSERS_INTERVAL, speed.WARMUP)
    model, noise, inputs = speed.build_model("tiny")
    compiled = torch.compile(model, backend="taylorseer", options={
        "schedule": schedule, "num_steps": steps, "compiler": "eager"})
    with torch.no_grad():
        speed.sample(compiled, noise, inputs, steps)
    runtime = controller_of(compiled).runtimes[0]
    return call_overhead, speed, schedule, compiled, noise, inputs, runtime


def test_replayed_runtime_calls_each_steps_graph_without_the_runtime():
    """The measurement-only lever: inside its block every step calls the graph the runtime
    called at that step (compute or forecast, in the schedule's places) and the runtime counts
    none of them; outside it, the runtime is back."""
    import ts_compile
    from ts_compile.runtime import GraphRuntime

    call_overhead, speed, schedule, compiled, noise, inputs, runtime = _one_generation_run()
    steps = call_overhead.STEPS
    real = GraphRuntime.__call__
    with torch.no_grad():
        replay = call_overhead._Replayed(compiled, runtime, noise, inputs)
        assert [k for k, (graph, _) in enumerate(replay.calls)
                if graph is runtime.compute_fn] == schedule
        ran = []

        def logged(graph):
            return lambda *a: ran.append("C" if graph is runtime.compute_fn else "F") or graph(*a)

        replay.calls = [(logged(graph), extra) for graph, extra in replay.calls]
        before = runtime.computed_steps, runtime.forecast_steps
        ts_compile.reset(compiled)
        with replay:
            speed.sample(compiled, noise, inputs, steps)
        assert GraphRuntime.__call__ is real
        assert [k for k, kind in enumerate(ran) if kind == "C"] == schedule and len(ran) == steps
        assert (runtime.computed_steps, runtime.forecast_steps) == before  # the runtime never ran
        ts_compile.reset(compiled)
        speed.sample(compiled, noise, inputs, steps)
        assert runtime.forecast_steps - before[1] == steps - len(schedule)


def test_minimal_runtime_writes_each_steps_scalars_and_reads_the_inputs():
    """The second measurement-only lever: each step's graph gets the scalars the runtime wrote
    at that step (forecast steps differ from each other, so a stale write would show), the
    runtime counts none of the calls, and a call identical to the previous one (same latent
    version, same time) is refused, as it reads both."""
    import ts_compile
    from ts_compile.runtime import GraphRuntime

    call_overhead, speed, schedule, compiled, noise, inputs, runtime = _one_generation_run()
    steps = call_overhead.STEPS
    real = GraphRuntime.__call__
    with torch.no_grad():
        minimal = call_overhead._Minimal(compiled, runtime, noise, inputs)
        assert len({tuple(v) for v in minimal.written}) > 5  # the steps' scalars differ
        seen = []
        minimal.calls = [((lambda *a, g=graph: seen.append(a[-1][:len(minimal.written[0])]
                                                            .tolist()) or g(*a)), extra)
                         for graph, extra in minimal.calls]
        before = runtime.computed_steps, runtime.forecast_steps
        ts_compile.reset(compiled)
        with minimal:
            speed.sample(compiled, noise, inputs, steps)
            kwargs = inputs(noise, 0.5)
            compiled(**kwargs)
            with pytest.raises(RuntimeError, match="the same call twice"):
                compiled(**kwargs)
        assert GraphRuntime.__call__ is real
        assert seen[:steps] == minimal.written
        assert (runtime.computed_steps, runtime.forecast_steps) == before


def test_runtime_split_times_the_three_ways_in_one_process(capsys):
    """--runtime-split: one row per process with the three ways' forecast steps, the non-block
    step and the ratios they make, then the median row; every way measured, none failed."""
    module = _call_overhead()
    assert module.main(["--runtime-split", "1", "--repeats", "1", "--compiler", "eager"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert cells[0] == "1", lines
    forecast = [float(v) for v in cells[1].split(" / ")]
    non_block = float(cells[2])
    ratios = [float(v) for v in cells[3].split(" / ")]
    assert len(forecast) == 3 and all(f > 0 for f in forecast) and non_block > 0, cells
    for f, ratio in zip(forecast, ratios):
        assert abs(ratio - f / non_block) < 0.02 * ratio + 0.01, cells
    assert lines[2].startswith("| median"), lines


def test_call_overhead_refuses_an_unknown_lever():
    module = _call_overhead()
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--variants", "default,skip-guards"])
    assert exit_info.value.code == 2


def test_call_overhead_counts_the_guards(capsys):
    module = _call_overhead()
    assert module.main(["--count-guards"]) == 0
    out = capsys.readouterr().out
    total, on_tree = map(int, re.search(r"(\d+) guards, (\d+) on the module tree", out).groups())
    assert 0 < on_tree < total, out
    assert re.search(r"TENSOR_MATCH \d+", out)  # the parameters' guards are among them
    assert re.search(r"module check: [\d.]+ ms per generation \(\d+ modules\)", out)
    assert re.search(r"the same check right after a full step \(plain Inductor\): [\d.]+ ms", out)
    assert re.search(r"a full comparison \(a write that changes nothing, then the fingerprint "
                     r"retaken\): [\d.]+ ms", out)
