"""Options: every bad value is rejected with an error naming the option, the value and what is allowed."""

import pytest
import torch

import ts_compile
from ts_compile import OptionError, TaylorSeerOptions

from .conftest import compile_ts
from .models import ModelSpec, build_model, make_inputs

BAD = [
    ({"order": 5}, "'order'=5", "0..4"),
    ({"order": -1}, "'order'=-1", "0..4"),
    ({"order": True}, "'order'=True", "0..4"),
    ({"order": 1.0}, "'order'=1.0", "0..4"),
    ({"interval": 0}, "'interval'=0", ">= 1"),
    ({"warmup": 0}, "'warmup'=0", ">= 1"),
    ({"cooldown": 2}, "'cooldown'=2", "num_steps"),
    ({"num_steps": 0}, "'num_steps'=0", ">= 1"),
    ({"schedule": [1, 2]}, "'schedule'", "step 0"),
    ({"schedule": [0, -1]}, "'schedule'", "ints >= 0"),
    ({"schedule": "0,1"}, "'schedule'", "sequence"),
    ({"schedule": {0: 1}}, "'schedule'", "sequence"),
    ({"schedule": [0, 2.0]}, "'schedule'", "ints >= 0"),
    ({"interval": 2.5}, "'interval'=2.5", ">= 1"),
    ({"schedule": [0, 9], "num_steps": 5}, "'schedule'", "below num_steps=5"),
    ({"cut": "blocks"}, "'cut'='blocks'", "regular expressions"),
    ({"cut": ["blocks\\.("]}, "'cut'", "valid regular expression"),
    ({"cut": []}, "'cut'=[]", "non-empty"),
    ({"compiler": "no_such_backend"}, "'compiler'='no_such_backend'", "registered Dynamo backend"),
    ({"compiler": "taylorseer"}, "'compiler'='taylorseer'", "registered Dynamo backend"),
    ({"compiler": 3}, "'compiler'=3", "a callable"),
    ({"state_dtype": "int8"}, "'state_dtype'='int8'", "'float32'"),
    ({"mode": "fast"}, "'mode'='fast'", "'reduce-overhead'"),
    ({"ordr": 2}, "unknown option 'ordr'", "order"),
    ({"compiler": "eager", "max_autotun": True}, "unknown option 'max_autotun'", "Inductor"),
    ({"inductor_config": {"max_autotun": True}}, "unknown option 'max_autotun'", "Inductor"),
    ({"inductor_config": 5}, "'inductor_config'=5", "a dict"),
    ({"compiler": "eager", "max_autotune": 3}, "'max_autotune'=3", "True or False"),
]


@pytest.mark.parametrize("options, names, allowed", BAD)
def test_bad_option_names_option_value_and_allowed(options, names, allowed):
    with pytest.raises(OptionError) as err:
        TaylorSeerOptions.from_compile_kwargs(options=options)
    assert names in str(err.value) and allowed in str(err.value)


def test_defaults_and_cut_patterns_are_normalised():
    opts = TaylorSeerOptions.from_compile_kwargs(options={"cut": [r"blocks\.\d+\.attn"],
                                                          "schedule": [0, 3, 3, 7]})
    assert opts.cut == (r"blocks\.\d+\.attn",)
    assert opts.schedule == frozenset({0, 3, 7})
    assert TaylorSeerOptions().state_dtype == "float32"


def test_inductor_keys_and_mode_pass_through():
    opts = TaylorSeerOptions.from_compile_kwargs(
        options={"mode": "reduce-overhead", "max_autotune": False, "order": 1})
    patches = opts.inductor_patches()
    assert patches["triton.cudagraphs"] is True and patches["max_autotune"] is False
    via_mode = TaylorSeerOptions.from_compile_kwargs(mode="reduce-overhead")
    assert via_mode.inductor_patches()["triton.cudagraphs"] is True
    with pytest.raises(OptionError, match="conflicts"):
        TaylorSeerOptions.from_compile_kwargs(mode="max-autotune", options={"mode": "default"})


def test_integers_of_other_libraries_are_ints():
    import numpy as np

    opts = TaylorSeerOptions.from_compile_kwargs(options={
        "interval": np.int64(4), "order": torch.tensor(1), "num_steps": np.int32(20),
        "schedule": np.array([0, 4, 8])})
    assert (opts.interval, opts.order, opts.num_steps) == (4, 1, 20)
    assert all(type(v) is int for v in (opts.interval, opts.order, opts.num_steps))
    assert opts.schedule == frozenset({0, 4, 8}) and all(type(s) is int for s in opts.schedule)
    with pytest.raises(OptionError, match="'order'"):
        TaylorSeerOptions.from_compile_kwargs(options={"order": np.float64(1.0)})


@pytest.mark.parametrize("options, message", [
    ({"order": 7}, "'order'=7"),
    ({"compiler": "eager", "max_autotun": True}, "unknown option 'max_autotun'"),
])
def test_option_errors_reach_the_caller_as_option_error(options, message):
    # Raised while Dynamo compiles the first call, they still arrive as ts_compile.OptionError
    # (not wrapped in Dynamo's BackendCompilerFailed), with the message alone.
    spec = ModelSpec(width=4, lists=(2,))
    model = build_model(spec)
    compiled = compile_ts(model, **options)
    with torch.no_grad(), pytest.raises(OptionError) as err:
        compiled(make_inputs(spec), torch.tensor(0.5))
    assert message in str(err.value) and "TORCHDYNAMO_VERBOSE" not in str(err.value)


def test_generation_checks_the_options_before_any_call():
    compiled = compile_ts(build_model(ModelSpec(width=4, lists=(2,))), interval=0)
    with pytest.raises(OptionError, match="'interval'=0"):
        with ts_compile.generation(compiled):
            pass
