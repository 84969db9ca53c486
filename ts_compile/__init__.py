"""ts-compile: TaylorSeer feature forecasting for diffusion transformers, as a torch.compile backend.

    compiled = torch.compile(model, backend="taylorseer", options={"interval": 5, "order": 2})
    compiled = torch.compile(model, backend=ts_compile.TaylorSeerBackend(interval=5, order=2))
    ts_compile.reset(compiled)   # between generations (or: with ts_compile.generation(compiled):)
    ts_compile.stats(compiled)   # what happened
    ts_compile.export(model, args, kwargs, options=..., path=...)   # AOTInductor artefact
    runner = ts_compile.load(path)                                   # no Dynamo at serve time
    options={"guard_filter_fn": ts_compile.skip_module_guards, ...}  # module guards per generation
"""

from .api import branch, explain, generation, reset, stats
from .deploy import ArtefactError, ExportedTaylorSeer, export, load
from .module_guards import ModelEditedError, skip_module_guards
from .options import AdaptiveOptions, OptionError, TaylorSeerOptions
from .schedule import computed_steps, flops_speedup, is_computed_step

__all__ = ["AdaptiveOptions", "ArtefactError", "ExportedTaylorSeer", "ModelEditedError",
           "OptionError", "TaylorSeerBackend", "TaylorSeerOptions", "branch", "computed_steps",
           "explain", "export", "flops_speedup", "generation", "is_computed_step", "load",
           "reset", "skip_module_guards", "stats"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The backend module loads Dynamo: only when the object form is asked for.
    if name == "TaylorSeerBackend":
        from .backend import TaylorSeerBackend

        return TaylorSeerBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
