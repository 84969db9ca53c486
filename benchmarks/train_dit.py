"""Train the quality benchmark's DIT model on scikit-learn's digits (see docs/quality.md).

    python benchmarks/train_dit.py [--steps N] [--seed 0] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import models  # noqa: E402
from quality_lib.train import train  # noqa: E402

DEFAULT_STEPS = {"dit": 1000, "flux": 1000}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS["dit"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(models.CHECKPOINTS, "dit_digits"))
    a = p.parse_args(argv)
    train("dit", a.steps, seed=a.seed, threads=a.threads, out=a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
