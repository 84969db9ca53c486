"""diffusers' context and tensor parallelism under backend="taylorseer", 2 processes with gloo.

One launch of two worker processes (tests/distributed_worker.py) runs every case; each case is
then checked on its own: every rank's output at every step equals the single-process taylorseer
run of the same model and options, each rank's Taylor state holds only its shard, and
`ts_compile.stats` counts the collectives that forecast steps skipped (checked against an eager
count of the collectives issued inside the blocks). The workers destroy their process group in
`finally`; this module kills them if they outlive the time limit; a worker's traceback is part of
the failing test's message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import compile_ts
from .diffusers_models import BUILDERS
from .distributed_worker import OPTIONS

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo")

ROOT = Path(__file__).resolve().parents[1]
CASES = [("flux", "ulysses"), ("flux", "ring"), ("flux", "tp"), ("wan", "ulysses"), ("wan", "ring")]
BAD_CASE = ("flux", "no_such_mode")  # checks that a worker's failure reaches the test
STEPS = 8  # interval 3, warm-up 3: steps 0, 1, 2, 5 computed; 3, 4, 6, 7 forecast
WORLD = 2
TIMEOUT_S = 240  # the whole launch; a normal run takes 40-90 s on 2 cores, depending on load


def _reference(model_name: str) -> dict:
    """The single-process taylorseer run, same model (seed), options and steps as the workers."""
    import ts_compile
    from ts_compile.api import controller_of

    torch._dynamo.reset()
    model, make_kwargs = BUILDERS[model_name]()
    model.set_attention_backend("native")
    compiled = compile_ts(model, **OPTIONS)
    with torch.no_grad():
        outputs = [compiled(**make_kwargs(step, STEPS))[0].clone() for step in range(STEPS)]
    stats = ts_compile.stats(compiled)
    shapes = [tuple(t.shape) for r in controller_of(compiled).runtimes
              for st in r.states.values() for t in st.tables]
    torch._dynamo.reset()
    return {"outputs": outputs, "stats": stats, "table_shapes": shapes}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch the two ranks once for all cases; meanwhile compute the single-process references."""
    out = tmp_path_factory.mktemp("distributed")
    cases = ",".join(f"{m}:{p}" for m, p in [*CASES, BAD_CASE])
    env = {**os.environ, "WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    procs, logs = [], []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for rank in range(WORLD):
            log = open(out / f"rank{rank}.log", "w")  # files, not pipes: no pipe-buffer deadlock
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.distributed_worker", "--store", str(out / "store"),
                 "--out", str(out), "--cases", cases, "--steps", str(STEPS), "--timeout", "60"],
                cwd=ROOT, env={**env, "RANK": str(rank)}, stdout=log, stderr=subprocess.STDOUT))
        references = {name: _reference(name) for name in dict.fromkeys(m for m, _ in CASES)}
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"distributed workers still running after {TIMEOUT_S} s; rank 0 log:\n"
                            + _tail(out / "rank0.log"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    return out, references


def _tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _load(out: Path, model_name: str, mode: str) -> list[dict]:
    """Each rank's results, or the test fails with that rank's traceback."""
    results = []
    for rank in range(WORLD):
        stem = out / f"{model_name}_{mode}_rank{rank}"
        if stem.with_suffix(".err").exists():
            pytest.fail(f"rank {rank} failed on {model_name}:{mode}:\n"
                        + stem.with_suffix(".err").read_text())
        if not stem.with_suffix(".pt").exists():
            pytest.fail(f"rank {rank} left no result for {model_name}:{mode}; its log:\n"
                        + _tail(out / f"rank{rank}.log"))
        results.append(torch.load(stem.with_suffix(".pt"), weights_only=False))
    return results


@pytest.mark.parametrize("model_name,mode", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_parallel_run_matches_single_process(runs, model_name, mode):
    out, references = runs
    reference = references[model_name]
    ref_stats = reference["stats"]
    assert ref_stats["forecast_steps"] == 4 and ref_stats["collectives_skipped"] == 0
    for rank, result in enumerate(_load(out, model_name, mode)):
        stats = result["stats"]
        assert stats["skipped_regions"] == [], stats
        if result["fullgraph"]:
            assert stats["fallbacks"] == [], stats
        else:  # older Dynamo breaks the graph at the output gather: the graphs after it hold no
            # block and compile plainly; the blocks are all in the first
            assert all("found no transformer blocks" in f for f in stats["fallbacks"]), stats
        assert stats["regions"] == ref_stats["regions"]
        assert (stats["computed_steps"], stats["forecast_steps"]) == (4, 4)
        for step, (got, want) in enumerate(zip(result["outputs"], reference["outputs"],
                                               strict=True)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"rank {rank} step {step}: {m}")

        # Each rank's state holds its shard only.
        shards, fulls = result["table_shapes"], reference["table_shapes"]
        assert len(shards) == len(fulls) > 0
        if mode == "tp":
            # The live output (the last block's) is replicated after the row-wise all-reduce.
            assert stats["state_bytes"] == ref_stats["state_bytes"] and shards == fulls
        else:
            assert stats["state_bytes"] * WORLD == ref_stats["state_bytes"]
            for shard, full in zip(shards, fulls):  # only the sequence dimension is split
                split = [d for d, (a, b) in enumerate(zip(shard, full)) if a != b]
                assert len(shard) == len(full) and len(split) == 1, (shard, full)
                assert shard[split[0]] * WORLD == full[split[0]]

        # Collectives: what the graphs hold equals what eager issues inside the blocks.
        per_step = result["eager_block_collectives"]
        assert per_step > 0
        assert sum(stats["collectives_per_region"].values()) == per_step
        assert stats["collectives_skipped"] == stats["forecast_steps"] * per_step
        kind = {"ulysses": "all_to_all", "ring": "all_gather", "tp": "all_reduce"}[mode]
        assert stats["collectives_skipped_by_kind"] == {kind: stats["collectives_skipped"]}


def test_a_failing_worker_reports_its_traceback(runs):
    out, _ = runs
    with pytest.raises(pytest.fail.Exception, match=r"(?s)Traceback.*unknown parallel mode"):
        _load(out, *BAD_CASE)


def test_placement_changes_that_move_data():
    from torch.distributed.tensor import Partial, Replicate, Shard

    from ts_compile.analysis.collectives import _placement_change

    assert _placement_change(Partial(), Replicate()) == "all_reduce"
    assert _placement_change(Partial(), Shard(0)) == "reduce_scatter"
    assert _placement_change(Shard(1), Replicate()) == "all_gather"
    assert _placement_change(Shard(1), Shard(2)) == "all_to_all"
    assert _placement_change(Replicate(), Shard(0)) is None  # a local slice
    assert _placement_change(Shard(2), Shard(2)) is None


# ---------------------------------------------------------------------------------------------
# benchmarks/distributed_bench.py: argument handling (the runs themselves take minutes)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("distributed_bench",
                                                  ROOT / "benchmarks" / "distributed_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_help(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--backend {gloo,nccl}" in out and "--dry-run" in out


def test_bench_dry_run_prints_the_plan(bench, capsys):
    assert bench.main(["--dry-run", "--modes", "ulysses,tp", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "modes ulysses, tp" in out and "gloo" in out and "nothing was run" in out


@pytest.mark.parametrize("argv,message", [
    (["--modes", "ulysses,pipeline"], "unknown ['pipeline']"),
    (["--modes", ""], "unknown empty"),
    (["--nproc", "1"], "at least 2 processes"),
    (["--model", "wan", "--modes", "tp"], "no tensor-parallel plan for Wan"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--order", "7"], "--order must be in 0..4"),
])
def test_bench_refuses_bad_arguments(bench, capsys, argv, message):
    assert bench.main([*argv, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_bench_argparse_errors_exit_2(bench):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--backend", "mpi"])
    assert exit_.value.code == 2


def test_bench_nccl_refuses_without_enough_gpus(bench, capsys):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert bench.main(["--backend", "nccl", "--nproc", str(max(2, gpus + 1)), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert ("CUDA is not available" in err) if gpus == 0 else (f"only {gpus} GPU(s)" in err)
