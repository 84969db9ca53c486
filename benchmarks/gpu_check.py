"""Every check that needs a GPU, in one script, so that a lent H100/H200 is used in one short run.

    python benchmarks/gpu_check.py                  # on the GPU (falls back to CPU if none)
    python benchmarks/gpu_check.py --device cpu --models dit --steps 4 --repeat 1   # tiny, CPU

The CPU form runs in the test suite (tests/test_gpu_check.py), so the script is always ready.

Checks so far:
  export   the deployment artefact on the device: `ts_compile.export`, `ts_compile.load`, agreement
           with the Dynamo path at every step, per-step latency of the compute and forecast
           programs (benchmarks/export_bench.py does the work).
Still to add (performance issue): a FLUX.1-dev-sized model at 1024x1024 with
`mode="reduce-overhead"` (CUDA graphs), per-step latency of each graph, peak memory.

Not yet run on a GPU: no device was lent to the session that wrote it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import export_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", default="flux,dit")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"gpu_check on {name}, torch {torch.__version__}")
    began = time.perf_counter()
    print("\n== export: AOTInductor artefact on the device ==")
    export_bench.run([m for m in args.models.split(",") if m], device, args.steps, args.repeat)
    print(f"\ngpu_check finished in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
