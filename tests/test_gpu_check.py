"""The GPU check script runs end to end at a tiny size on CPU, so it is ready when a GPU is lent."""

import importlib.util
import re
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.export
def test_gpu_check_runs_on_cpu_at_tiny_size(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--sections", "export", "--models", "dit",
                        "--steps", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "== export" in out and "dit" in out and "gpu_check finished" in out


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_perf_section_runs_on_cpu_at_tiny_size(capsys):
    module = _load()
    assert module.main(["--device", "cpu", "--sections", "perf", "--tiny", "--double", "1",
                        "--single", "2", "--resolution", "128", "--text-tokens", "8",
                        "--perf-steps", "12", "--perf-repeat", "1", "--compiler", "eager"]) == 0
    out = capsys.readouterr().out
    assert "taylorseer N=5 O=2" in out
    # 12 steps, warm-up 3, N=5: steps 0, 1, 2, 7 computed; three generations were run.
    assert "computed steps 4/12" in out and "12 computed, 24 forecast calls" in out
    assert "0 recompiles, fallbacks []" in out
    assert re.search(r"forecast step / non-block step [\d.]+ \(goal <= 1.2\)", out)
    # issue #17's rows: each forecaster's and adaptive steps' costs beside the fixed row
    assert "forecaster=hermite" in out and "forecaster=newton" in out
    assert re.search(r"adaptive=\{'tolerance': 0.05.*", out)


def test_gpu_check_rejects_unknown_sections():
    assert _load().main(["--device", "cpu", "--sections", "perf,bogus"]) == 2


def test_gpu_check_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cuda"]) == 2
