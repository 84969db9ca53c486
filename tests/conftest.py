import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch (no cache entries or recompile budget carried over)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compile_ts(model, fullgraph=True, **options):
    """torch.compile with the taylorseer backend; eager inner compiler unless a test asks."""
    options.setdefault("compiler", "eager")
    return torch.compile(model, backend="taylorseer", options=options, fullgraph=fullgraph)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
