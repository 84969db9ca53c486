"""Options: every bad value is rejected with an error naming the option, the value and what is allowed."""

import pytest
import torch

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
    ({"schedule": "0,1"}, "'schedule'", "collection"),
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


def test_torch_compile_rejects_bad_option_before_compiling():
    spec = ModelSpec(width=4, lists=(2,))
    model = build_model(spec)
    compiled = compile_ts(model, order=7)
    with torch.no_grad(), pytest.raises(Exception) as err:
        compiled(make_inputs(spec), torch.tensor(0.5))
    assert "'order'=7" in str(err.value)
