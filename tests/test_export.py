"""The deployment artefact (ts_compile.export): AOTInductor packages, no Dynamo at serve time.

Uses the two artefacts of tests/export_artefacts.py (tiny FLUX, tiny DiT), exported once per
session. The reference is the Dynamo path, `torch.compile(..., backend="taylorseer")` with the
same options (eager inner compiler, so no Inductor compile here). Manifest edits, forged packages
and pickles: tests/test_export_trust.py. ONNX: tests/test_export_onnx.py.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import ts_compile
from ts_compile.artefact import (FORMAT_VERSION, ArtefactError, option_mismatches,
                                 options_from_json, options_to_json)
from ts_compile.deploy import export, load
from ts_compile.options import TaylorSeerOptions
from ts_compile.schedule import computed_steps

from .conftest import compile_ts
from .export_artefacts import (DIT_OPTIONS, OPTIONS, TOL, dit_runner_against_dynamo,
                               flux_step_kwargs)

HEIGHT = WIDTH = 32  # FluxPipeline -> 64 image tokens of 16 channels, as exported


def same_stats(runner, compiled):
    keys = ("regions", "live_outputs", "computed_steps", "forecast_steps", "state_bytes",
            "skipped_regions", "contexts")
    got, want = runner.stats(), ts_compile.stats(compiled)
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert got["fallbacks"] == [] and got["recompiles"] == 0 and got["graphs"] == 1


# ------------------------------------------------------------------------------------------------
# outputs equal the Dynamo path at every step
# ------------------------------------------------------------------------------------------------
@pytest.mark.export
def test_flux_matches_dynamo_path_every_step_without_dynamo(flux):
    pipe, _, path = flux
    frames = dict(torch._dynamo.utils.counters["frames"])
    runner = load(path, options=OPTIONS)
    steps = []
    for reset in (runner.reset, lambda: ts_compile.reset(runner)):  # two generations
        steps.append([runner(**flux_step_kwargs(1 - s / 10))[0] for s in range(10)])
        reset()
    assert dict(torch._dynamo.utils.counters["frames"]) == frames  # load and run: no Dynamo
    compiled = compile_ts(pipe.transformer, **OPTIONS)
    with torch.no_grad():
        for generation in steps:
            ts_compile.reset(compiled)
            for s, got in enumerate(generation):
                torch.testing.assert_close(got, compiled(**flux_step_kwargs(1 - s / 10))[0], **TOL)
    assert runner.stats()["computed_steps"] == 2 * len(computed_steps(
        TaylorSeerOptions(**OPTIONS), 10))
    assert ts_compile.stats(runner) == runner.stats()
    assert runner.stats()["state_bytes"] == runner.manifest["state"]["bytes"]
    same_stats(runner, compiled)
    # forecast steps really forecast (the blocks did not run): differs from the plain model
    with torch.no_grad():
        plain = pipe.transformer(**flux_step_kwargs(1 - 9 / 10))[0]
    assert not torch.allclose(steps[1][9], plain, rtol=1e-4, atol=1e-5)


@pytest.mark.export
def test_flux_contexts_and_explicit_step_index_reset_like_dynamo(flux):
    pipe, _, path = flux
    model = pipe.transformer
    runner = load(path)
    compiled = compile_ts(model, fullgraph=False, **OPTIONS)
    # step indices given by a "pipeline": going back to 0 starts a new generation
    schedule = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    with torch.no_grad():
        for i, step in enumerate(schedule):
            for name in ("cond", "uncond"):
                kwargs = flux_step_kwargs(1 - step / 10 + (0.05 if name == "uncond" else 0))
                with runner.cache_context(name, step_index=step):
                    got = runner(**kwargs)[0]
                with model.cache_context(name, step_index=step):
                    want = compiled(**kwargs)[0]
                torch.testing.assert_close(got, want, **TOL, msg=f"call {i} ({name})")
    same_stats(runner, compiled)
    assert runner.stats()["contexts"] == ["cond", "uncond"]


@pytest.mark.export
def test_dit_matches_dynamo_path_and_resets_after_num_steps(dit):
    runner, compiled = dit_runner_against_dynamo(*dit)  # no reset(): num_steps ends each
    same_stats(runner, compiled)
    assert runner.stats()["computed_steps"] == 2 * len(computed_steps(
        TaylorSeerOptions(**DIT_OPTIONS), 6))
    assert runner.manifest["inputs"]["time_tensor_index"] == 1  # hidden_states, timestep, ...


@pytest.mark.export
def test_hand_written_loops_are_placed_like_the_dynamo_path(flux):
    """No reset, no num_steps, CFG as two calls with one latent tensor: the runner places the
    calls as the Dynamo path does (the same latent again is the other branch of the step; the
    time going back up is a new generation), and the result is the correctly reset, per-branch
    TaylorSeer of the Dynamo path driven explicitly."""
    pipe, _, path = flux
    model = pipe.transformer
    runner = load(path, options=OPTIONS)
    assert (runner.manifest["inputs"]["latent_tensor_index"],
            runner.manifest["inputs"]["clock_tensor_index"]) == (0, 1)  # hidden_states, timestep
    compiled = compile_ts(model, fullgraph=False, **OPTIONS)
    uncond = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for generation in range(2):  # back to back, no reset
            for step in range(8):
                kwargs = flux_step_kwargs(1 - step / 10)
                for name in ("cond", "uncond"):  # the same hidden_states tensor twice
                    if name == "uncond":
                        kwargs = {**kwargs, "encoder_hidden_states": uncond}
                    got = runner(**kwargs)[0]
                    with model.cache_context(name, step_index=step):
                        want = compiled(**kwargs)[0]
                    torch.testing.assert_close(got, want, **TOL,
                                               msg=f"generation {generation} step {step} {name}")
    assert [str(w.message) for w in record if "ts_compile" in str(w.message)] == []
    stats = runner.stats()
    assert stats["time_went_back"] == 1 and stats["second_calls"] == 16
    assert stats["forecast_steps"] == ts_compile.stats(compiled)["forecast_steps"] > 0


@pytest.mark.export
def test_pipeline_runs_generations_with_the_loaded_artefact(flux):
    pipe, make_kwargs, path = flux
    model = pipe.transformer
    try:
        pipe.transformer = load(path)  # true CFG: "cond" and "uncond" contexts
        with torch.no_grad():
            got = [pipe(**make_kwargs(height=HEIGHT, width=WIDTH))[0] for _ in range(2)]
        runner = pipe.transformer
        pipe.transformer = compiled = compile_ts(model, fullgraph=False, **OPTIONS)
        with torch.no_grad():
            want = [pipe(**make_kwargs(height=HEIGHT, width=WIDTH))[0] for _ in range(2)]
    finally:
        pipe.transformer = model
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0], got[1])  # the pipeline reset the state in between
    same_stats(runner, compiled)
    assert runner.stats()["forecast_steps"] > 0


# ------------------------------------------------------------------------------------------------
# the artefact: manifest, refusals
# ------------------------------------------------------------------------------------------------
@pytest.mark.export
def test_manifest_is_json_with_layout_versions_and_checksums(flux):
    _, _, path = flux
    assert sorted(p.name for p in path.iterdir()) == ["compute.pt2", "forecast.pt2",
                                                     "manifest.json"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["program_format"] == "aoti"
    leaves = {leaf["path"]: leaf for leaf in manifest["inputs"]["leaves"]}
    assert leaves["timestep"]["shape"] == [1] and leaves["timestep"]["stride"] == [1]
    assert leaves["hidden_states"]["stride"] == [1024, 16, 1]
    assert leaves["return_dict"] == {"kind": "constant", "path": "return_dict", "value": False}
    assert manifest["torch_version"] == torch.__version__ and manifest["device"] == "cpu"
    assert TaylorSeerOptions.coerce(manifest["options"]) == TaylorSeerOptions.coerce(OPTIONS)
    assert manifest["state"]["tables"][0]["shape"] == [1, 64, 32]
    assert manifest["state"]["tables"][0]["region"] == "single_transformer_blocks.1"
    assert manifest["inputs"]["num_user_inputs"] == len(manifest["inputs"]["leaves"]) == 8
    assert manifest["model"]["config"]["in_channels"] == 16
    before, after = manifest["build"]["forecast_ops"]  # FLUX's rotary embedding is gone
    assert after < before and after < manifest["build"]["compute_ops"][1]
    for name in ("compute", "forecast"):
        record = manifest["packages"][name]
        assert len(record["sha256"]) == 64
        assert record["bytes"] == (path / record["file"]).stat().st_size


def _copy(path, tmp_path):
    target = tmp_path / "copy.tsaot"
    shutil.copytree(path, target)
    return target


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.export
def test_load_refuses_other_options_version_device(flux, tmp_path):
    _, _, path = flux
    with pytest.raises(ArtefactError, match=r"other options: order: artefact has 2, expected 1"):
        load(path, options={**OPTIONS, "order": 1})
    with pytest.raises(ArtefactError, match=r"interval: artefact has 3, expected 5"):
        load(path, options={**OPTIONS, "interval": 5})
    with pytest.raises(ArtefactError, match=r"exported for device cpu, not cuda"):
        load(path, device="cuda")
    copy = _copy(path, tmp_path)
    _edit_manifest(copy, torch_version="2.0.0")
    with pytest.raises(ArtefactError, match=r"exported with torch 2\.0\.0, this is torch"):
        load(copy)
    _edit_manifest(copy, torch_version=torch.__version__, format_version=99)
    with pytest.raises(ArtefactError, match="format version 99"):
        load(copy)
    if not torch.cuda.is_available():
        _edit_manifest(copy, format_version=FORMAT_VERSION, device="cuda:0")
        with pytest.raises(ArtefactError, match="exported for device cuda:0.*not available"):
            load(copy)


@pytest.mark.export
def test_load_refuses_truncated_or_tampered_files(flux, tmp_path):
    _, _, path = flux
    copy = _copy(path, tmp_path)
    compute = copy / "compute.pt2"
    data = compute.read_bytes()
    compute.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtefactError, match="compute package .* bytes.*truncated"):
        load(copy)
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    compute.write_bytes(bytes(tampered))
    with pytest.raises(ArtefactError, match="compute package .*SHA-256"):
        load(copy)
    compute.write_bytes(data)
    manifest = (copy / "manifest.json").read_bytes()
    (copy / "manifest.json").write_bytes(manifest[: len(manifest) // 2])
    with pytest.raises(ArtefactError, match="not valid JSON"):
        load(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtefactError, match="not a ts_compile artefact"):
        load(copy)
    (copy / "manifest.json").write_bytes(manifest)
    record = json.loads(manifest)
    del record["inputs"]
    (copy / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ArtefactError, match=r"manifest field\(s\) inputs differ from what "
                                            r"compute\.pt2 recorded"):
        load(copy)
    record = json.loads(manifest)
    del record["packages"]
    (copy / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(ArtefactError, match="lacks a field or has an invalid one"):
        load(copy)
    (copy / "manifest.json").write_bytes(manifest)
    (copy / "forecast.pt2").unlink()
    with pytest.raises(ArtefactError, match="forecast package .* missing"):
        load(copy)


@pytest.mark.export
def test_calls_that_do_not_fit_the_artefact_fail_clearly(flux):
    _, _, path = flux
    runner = load(path)
    good = flux_step_kwargs(1.0)
    with pytest.raises(ArtefactError, match=r"input hidden_states must have shape \[1, 64, 16\]"):
        runner(**{**good, "hidden_states": torch.zeros(1, 32, 16)})
    with pytest.raises(ArtefactError,
                       match="input return_dict was exported as the constant False, got bool True"):
        runner(**{**good, "return_dict": True})
    with pytest.raises(ArtefactError, match="structure differs"):
        runner(**{**good, "joint_attention_kwargs": {"scale": 0.5}})
    with pytest.raises(ArtefactError, match="keyword mismatch"):
        runner(**{k: v for k, v in good.items() if k != "guidance"})
    assert runner.stats()["computed_steps"] == 0  # nothing ran, no state advanced


# ------------------------------------------------------------------------------------------------
# inputs in other layouts: the Dynamo path's result, or a clear error before any program runs
# ------------------------------------------------------------------------------------------------
def _spy_on_programs(runner):
    """Records the tensors each program call receives (to see whether an input was copied)."""
    calls = []
    runtime = runner._runtime
    for attr in ("compute_fn", "forecast_fn"):
        run = getattr(runtime, attr)
        setattr(runtime, attr, lambda *flat, _run=run: calls.append(flat) or _run(*flat))
    return calls


def _layouts(kwargs):
    """The DiT call with the same values in other layouts, as pipelines and users pass them."""
    x, t = kwargs["hidden_states"], kwargs["timestep"]
    offset = torch.cat([torch.zeros(1, *x.shape[1:]), x])[1:]  # a view at storage offset 256
    return {
        "timestep t.expand(batch), stride 0": {**kwargs, "timestep": t[:1].expand(2)},
        "timestep 0-d expanded": {**kwargs, "timestep": t[0].expand(2)},
        "transposed latent": {**kwargs, "hidden_states":
                              x.transpose(2, 3).contiguous().transpose(2, 3)},
        "expanded latent": {**kwargs, "hidden_states": x[:1].expand(2, -1, -1, -1)},
        "channels-last latent": {**kwargs, "hidden_states":
                                 x.contiguous(memory_format=torch.channels_last)},
        "latent at a storage offset": {**kwargs, "hidden_states": offset},
    }


@pytest.mark.export
def test_inputs_in_other_layouts_give_the_dynamo_paths_result(dit):
    model, make_kwargs, path = dit
    runner = load(path)
    compiled = compile_ts(model, fullgraph=False, **DIT_OPTIONS)
    calls = _spy_on_programs(runner)
    with torch.no_grad():
        for name in _layouts(make_kwargs(0, 6)):
            for step in range(6):  # a whole generation (it resets itself after step 5)
                kwargs = _layouts(make_kwargs(step, 6))[name]
                assert torch.equal(kwargs["timestep"], make_kwargs(step, 6)["timestep"])
                got = runner(**kwargs)[0]
                torch.testing.assert_close(got, compiled(**kwargs)[0], **TOL,
                                           msg=f"{name}, step {step}")
                passed_latent, passed_time = calls[-1][0], calls[-1][1]
                assert passed_time.stride() == (1,) and passed_latent.is_contiguous()
                if name == "latent at a storage offset":  # fits as it is: no copy
                    assert passed_latent is kwargs["hidden_states"]
    assert runner.stats()["forecast_steps"] > 0


@pytest.mark.export
def test_matching_inputs_reach_the_program_without_a_copy(dit):
    _, make_kwargs, path = dit
    runner = load(path)
    calls = _spy_on_programs(runner)
    kwargs = make_kwargs(0, 6)
    with torch.no_grad():
        runner(**kwargs)
    assert calls[0][0] is kwargs["hidden_states"] and calls[0][1] is kwargs["timestep"]


@pytest.mark.export
def test_inputs_that_cannot_fit_fail_before_any_program_runs(dit):
    _, make_kwargs, path = dit
    runner = load(path)
    calls = _spy_on_programs(runner)
    good = make_kwargs(0, 6)
    cases = [
        ({"timestep": good["timestep"][0]}, r"input timestep must have shape \[2\].*got .*shape \[\]"),
        ({"timestep": 0.5}, r"input timestep must be a tensor.*pass torch\.tensor\(0\.5\)"),
        ({"timestep": good["timestep"][:1]}, r"input timestep must have shape \[2\]"),
        ({"hidden_states": good["hidden_states"].double()},
         r"input hidden_states must have dtype torch\.float32.*\.to\(torch\.float32\)"),
        ({"hidden_states": good["hidden_states"].to("meta")},
         r"input hidden_states must be on cpu.*\.to\('cpu'\)"),
        ({"class_labels": good["class_labels"].float()}, r"input class_labels must have dtype "
                                                         r"torch\.int64"),
    ]
    with torch.no_grad():
        for change, message in cases:
            with pytest.raises(ArtefactError, match=message):
                runner(**{**good, **change})
    assert calls == [] and runner.stats()["computed_steps"] == 0


# ------------------------------------------------------------------------------------------------
# no export needed
# ------------------------------------------------------------------------------------------------
def test_options_round_trip_through_json():
    settings = TaylorSeerOptions.coerce({"order": 3, "schedule": [0, 2, 5], "num_steps": 8,
                                         "cut": [r"blocks\.\d+"], "state_dtype": "bfloat16",
                                         "max_autotune": False})
    record = json.loads(json.dumps(options_to_json(settings)))
    assert options_from_json(record) == settings
    assert option_mismatches(settings, settings) == []
    # the Dynamo path's inner compiler is no property of an artefact
    assert option_mismatches(settings, TaylorSeerOptions.coerce(
        {**options_to_json(settings), "compiler": "eager"})) == []
    other = TaylorSeerOptions.coerce({"order": 1})
    assert any(m.startswith("order: artefact has 3, expected 1")
               for m in option_mismatches(settings, other))


def test_export_refuses_a_model_without_blocks(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    with pytest.raises(ArtefactError, match="does not apply"):
        export(model, (torch.zeros(2, 4),), path=tmp_path / "none.tsaot")
    assert not (tmp_path / "none.tsaot").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind


def test_export_never_overwrites_foreign_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a ts_compile artefact"):
        export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), path=tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").exists()
