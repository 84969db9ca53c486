"""The GPU check script runs end to end at a tiny size on CPU, so it is ready when a GPU is lent."""

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.export
def test_gpu_check_runs_on_cpu_at_tiny_size(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--models", "dit", "--steps", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "== export" in out and "dit" in out and "gpu_check finished" in out


def test_gpu_check_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cuda"]) == 2
