"""Every check that needs a GPU, in one script, so that a lent H100/H200 is used in one short run.

    python benchmarks/gpu_check.py                  # on the GPU (falls back to CPU if none)
    python benchmarks/gpu_check.py --device cpu --models dit --steps 4 --repeat 1   # tiny, CPU

The CPU form runs in the test suite (tests/test_gpu_check.py), so the script is always ready.

Sections (--sections, default both):
  perf     FLUX.1-dev widths at 1024x1024 in bf16: plain Inductor with and without CUDA graphs
           against taylorseer with mode="reduce-overhead": 50-step time, per-step latency of the
           compute and the forecast graph, peak memory, cudagraph-tree facts, host syncs per
           step (benchmarks/gpu_perf.py does the work; --double/--single set the block counts);
           then the same for forecaster="hermite", "newton" and options.adaptive (--variants):
           their forecast step, and adaptive's computed steps, signal reads and syncs.
  export   the deployment artefact on the device: `ts_compile.export`, `ts_compile.load`, agreement
           with the Dynamo path at every step, per-step latency of the compute and forecast
           programs (benchmarks/export_bench.py does the work).

On a GPU, run it as it is (budget: under 8 minutes on an H100 with the default 6 + 12 blocks).
Not yet run on a GPU: no device was lent to the sessions that wrote it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import export_bench  # noqa: E402
import gpu_perf  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", default="flux,dit")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--sections", default="perf,export")
    parser.add_argument("--tiny", action="store_true",
                        help="perf: a tiny FLUX (the CPU form in the test suite)")
    parser.add_argument("--double", type=int, default=6, help="perf: double blocks (FLUX: 19)")
    parser.add_argument("--single", type=int, default=12, help="perf: single blocks (FLUX: 38)")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--perf-steps", type=int, default=50)
    parser.add_argument("--perf-repeat", type=int, default=3)
    parser.add_argument("--compiler", default="inductor", choices=("inductor", "eager"))
    parser.add_argument("--variants", default="hermite,newton,adaptive",
                        help="perf: more taylorseer rows (forecasters, adaptive steps); '' none")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - {"perf", "export"}
    if unknown:
        print(f"gpu_check: unknown sections {sorted(unknown)}; allowed: perf, export",
              file=sys.stderr)
        return 2
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"gpu_check on {name}, torch {torch.__version__}")
    began = time.perf_counter()
    if "perf" in sections:
        print("\n== perf: FLUX-sized transformer, Inductor vs taylorseer (CUDA graphs on GPU) ==")
        gpu_perf.run(device, args.tiny, args.double, args.single, args.resolution,
                     args.text_tokens, args.perf_steps, args.perf_repeat, interval=5, order=2,
                     compiler=args.compiler,
                     variants=tuple(v for v in args.variants.split(",") if v))
    if "export" in sections:
        print("\n== export: AOTInductor artefact on the device ==")
        export_bench.run([m for m in args.models.split(",") if m], device, args.steps,
                         args.repeat)
    print(f"\ngpu_check finished in {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
