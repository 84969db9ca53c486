import os
import warnings

import pytest
import torch
from hypothesis import settings

# HYPOTHESIS_PROFILE=ci (what .ci/run sets): the same examples on every run, so whether a change
# lands does not depend on the draw. A plain run draws new examples each time (that is how the
# property tests keep finding things); a failure prints the blob that reproduces it.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch (no cache entries or recompile budget carried over)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# The backend's form compile_ts uses: "string" (backend="taylorseer", options={...}) or "object"
# (backend=ts_compile.TaylorSeerBackend(...)); the `backend_form` fixture runs a test with both.
BACKEND_FORM = {"form": "string"}


def backend_kwargs(**options):
    """torch.compile's backend arguments for `options`, in the form under test."""
    if BACKEND_FORM["form"] == "object":
        from ts_compile import TaylorSeerBackend

        return {"backend": TaylorSeerBackend(**options)}
    return {"backend": "taylorseer", "options": options}


def compile_ts(model, fullgraph=True, **options):
    """torch.compile with the taylorseer backend; eager inner compiler unless a test asks."""
    options.setdefault("compiler", "eager")
    return torch.compile(model, fullgraph=fullgraph, **backend_kwargs(**options))


@pytest.fixture(params=["string", "object"])
def backend_form(request):
    """Run the test with `backend="taylorseer"` and with a `TaylorSeerBackend` object."""
    BACKEND_FORM["form"] = request.param
    yield request.param
    BACKEND_FORM["form"] = "string"


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# Run in parallel (`-n 2 --dist loadfile`, the README's command, with pytest-xdist): each test file
# goes whole to one worker, so its module fixtures are built once; the files that share the
# session's export artefacts go to the same worker as one unit, so each artefact is built once.
_SHARED_ARTEFACTS = {"test_export.py", "test_export_trust.py"}

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one intra-op thread each, not two each contending for both cores.
    torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own scheduler for the mode
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the files sharing the export artefacts scheduled as one file."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesSharingArtefacts(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)  # the test's file
            return "export-artefacts" if scope.rsplit("/", 1)[-1] in _SHARED_ARTEFACTS else scope

    return FilesSharingArtefacts(config, log)


def pytest_collection_modifyitems(config, items):
    """Tests marked `sweep` (the rest of the every-transformer sweep) run only when selected with
    `-m sweep` (or any -m expression naming it); a plain run skips them and says how to run them."""
    if "sweep" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the full model sweep: run with -m sweep "
                                   "(or python benchmarks/model_sweep.py)")
    for item in items:
        if "sweep" in item.keywords:
            item.add_marker(skip)


# The export tests' artefacts, built once per session for every module that asks (a session
# fixture imported into two test modules is built once in each: ~45 s of AOTInductor per copy).
from .export_artefacts import dit, flux  # noqa: E402, F401
