"""Train the quality benchmark's FLUX model on scikit-learn's digits (see docs/quality.md).

    python benchmarks/train_flux.py [--steps N] [--seed 0] [--threads 2] [--out DIR]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("flux"))
