"""ts-compile: TaylorSeer feature forecasting for diffusion transformers, as a torch.compile backend.

    compiled = torch.compile(model, backend="taylorseer", options={"interval": 5, "order": 2})
    ts_compile.reset(compiled)   # between generations
    ts_compile.stats(compiled)   # what happened
"""

from .api import explain, reset, stats
from .options import OptionError, TaylorSeerOptions
from .schedule import computed_steps, flops_speedup, is_computed_step

__all__ = ["OptionError", "TaylorSeerOptions", "computed_steps", "explain", "flops_speedup",
           "is_computed_step", "reset", "stats"]
__version__ = "0.1.0"
